"""Property test of the pure-torch AWD core on random problems.

Random K (1–8), shapes, task-vector scales from 1e-8 to 1e4 (one scale for all, or one per task
vector), input dtypes float32/float64/bfloat16/float16, degenerate stacks (a zero, a duplicated
or an opposite task vector) and solver settings.  For both solvers:

* the merge output is finite: in the working dtype, and in the input dtype (as the adapter
  writes it) wherever the value fits that dtype;
* δ lies in the span of the task vectors: for the reduced solver by construction (δ = Σ β_k τ_k
  with finite β, zero for excluded task vectors), for the direct solver with gradient descent
  checked by least squares (Adam scales each coordinate separately and leaves the span);
* the AWD objective at the returned δ is not higher than at δ = 0, as reported
  (``loss ≤ initial_loss``) and recomputed here in float64 with ``awd_loss_and_grad`` on the
  full-size task vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from mergekit_awd.core.awd import (
    SolverSettings,
    awd_loss_and_grad,
    merge_disentangled,
    solve_reduced,
)
from mergekit_awd.core.awd_direct import solve_direct
from mergekit_awd.core.task_vectors import gram_of_task_vectors, task_vector_stack

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class Problem:
    base: torch.Tensor
    models: List[torch.Tensor]
    weights: torch.Tensor
    lam: float
    settings: SolverSettings
    description: str
    degeneracy: str = "none"

    def task_vectors64(self) -> torch.Tensor:
        """τ_i = θ_i − θ_base of the stored (rounded) inputs, exactly, as [K, n] float64."""
        base = self.base.double().reshape(-1)
        return torch.stack([m.double().reshape(-1) - base for m in self.models])


@st.composite
def problems(draw) -> Problem:
    k = draw(st.integers(1, 8))
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=2)))
    dtype_name = draw(st.sampled_from(sorted(DTYPES)))
    dtype = DTYPES[dtype_name]
    seed = draw(st.integers(0, 2**31 - 1))
    # one scale for all, or one per task vector within 10^±2.5 of it (norms up to 1e5 apart;
    # further apart is its own test below)
    common_exponent = draw(st.floats(-8, 4))
    offsets = draw(st.one_of(st.just([0.0] * k), st.lists(st.floats(-2.5, 2.5), min_size=k, max_size=k)))
    exponents = [min(max(common_exponent + o, -8.0), 4.0) for o in offsets]
    shared = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
    degeneracy = draw(st.sampled_from(["none", "zero", "duplicate", "opposite"]))
    base_scale = draw(st.sampled_from([0.0, 0.02, 1.0]))
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(shape, generator=generator, dtype=torch.float64)
    taus = [10.0 ** e * (shared * common + torch.randn(shape, generator=generator, dtype=torch.float64))
            for e in exponents]
    if k >= 2 and degeneracy == "zero":
        taus[1] = torch.zeros(shape, dtype=torch.float64)
    elif k >= 2 and degeneracy == "duplicate":
        taus[1] = taus[0].clone()
    elif k >= 2 and degeneracy == "opposite":
        taus[1] = -taus[0]
    base64 = base_scale * torch.randn(shape, generator=generator, dtype=torch.float64)
    base = base64.to(dtype)
    models = [(base64 + tau).to(dtype) for tau in taus]
    assume(all(bool(torch.isfinite(m).all()) for m in models))  # float16 ends at 65504
    solver = SolverSettings(
        alpha=draw(st.sampled_from([0.0, 1e-3, 0.01, 0.1, 1.0])),
        steps=draw(st.integers(1, 60)),
        lr=draw(st.sampled_from([1e-3, 0.01, 0.05, 0.5])),
        optimizer=draw(st.sampled_from(["gd", "adam"])),
        units=draw(st.sampled_from(["relative", "absolute"])),
    )
    weights = torch.tensor(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=k, max_size=k)),
                           dtype=torch.float64)
    lam = draw(st.sampled_from([0.3, 1.0]))
    description = (f"K={k} shape={shape} {dtype_name} exponents={[round(e, 2) for e in exponents]} "
                   f"shared={shared} {degeneracy} base_scale={base_scale} {solver}")
    return Problem(base, models, weights, lam, solver, description, degeneracy if k >= 2 else "none")


def objective(problem: Problem, delta: torch.Tensor) -> Tuple[float, float]:
    """(L(δ), L(0)) in float64 on the full-size task vectors, in the solver's units."""
    taus = problem.task_vectors64()
    norms = taus.norm(dim=1)
    active = norms > 0
    k = taus.shape[0]
    scale = float(norms[active].mean()) if problem.settings.units == "relative" and bool(active.any()) else 1.0
    points = taus[active] / scale
    at_delta, _ = awd_loss_and_grad(points.clone(), delta.double().reshape(-1) / scale, problem.settings.alpha, k * (k - 1))
    at_zero, _ = awd_loss_and_grad(points.clone(), torch.zeros(points.shape[1], dtype=torch.float64),
                                   problem.settings.alpha, k * (k - 1))
    return float(at_delta), float(at_zero)


def tolerance(problem: Problem, initial: float) -> float:
    """Rounding slack of the solver's working precision (float64 only for float64 inputs)."""
    eps = 1e-12 if problem.base.dtype == torch.float64 else 1e-5
    return eps * (1.0 + abs(initial))


def assert_merge_finite(problem: Problem, **delta) -> None:
    """The merge in the working dtype is finite; cast to the input dtype (as the adapter writes
    it) it is finite wherever the value fits that dtype (float16 overflows past 65504)."""
    work = merge_disentangled(problem.base, problem.models, problem.weights, problem.lam, **delta)
    assert work.shape == problem.base.shape and torch.isfinite(work).all(), problem.description
    out = merge_disentangled(problem.base, problem.models, problem.weights, problem.lam,
                             out_dtype=problem.base.dtype, **delta)
    assert out.dtype == problem.base.dtype
    fits = work.abs() <= torch.finfo(problem.base.dtype).max
    assert torch.isfinite(out[fits]).all(), problem.description
    assert torch.equal(out, work.to(problem.base.dtype))


def assert_summary_sane(result, k: int) -> None:
    for value in (result.loss, result.initial_loss, result.mean_abs_cos_before, result.mean_abs_cos_after,
                  result.delta_norm_ratio):
        assert math.isfinite(value), result
    assert result.loss <= result.initial_loss
    assert 0.0 <= result.mean_abs_cos_after <= 1.0 and 0.0 <= result.mean_abs_cos_before <= 1.0
    assert result.coefficients.shape == (k,) and torch.isfinite(result.coefficients).all()


SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_reduced(problem: Problem) -> None:
    k = len(problem.models)
    gram = gram_of_task_vectors(problem.base, problem.models)
    assert torch.isfinite(gram).all()
    included = gram.diagonal() > 0
    result = solve_reduced(gram, problem.settings)
    assert_summary_sane(result, k)
    # δ = Σ β_k τ_k: in the span by construction; excluded (zero) task vectors get β = 0
    assert bool((result.coefficients[~included] == 0).all())
    delta = result.coefficients @ problem.task_vectors64()
    assert torch.isfinite(delta).all()
    at_delta, at_zero = objective(problem, delta)
    assert at_delta <= at_zero + tolerance(problem, at_zero), (at_delta, at_zero, problem.description)
    assert_merge_finite(problem, coefficients=result.coefficients, included=included)


def check_direct(problem: Problem) -> None:
    k = len(problem.models)
    stack = task_vector_stack(problem.base, problem.models)
    direct = solve_direct(stack, problem.settings)
    result = direct.summary
    assert_summary_sane(result, k)
    delta = direct.delta
    assert delta.shape == problem.base.shape and torch.isfinite(delta).all()
    taus = problem.task_vectors64()
    active = taus.norm(dim=1) > 0
    # Exactly opposite task vectors sit on a ridge of the objective (|cos| = 1 falls off in every
    # direction orthogonal to them) where the exact gradient is zero: rounding noise then starts
    # a legitimate descent out of the span.  When all task vectors are parallel the exact gradient
    # is zero too and δ is rounding noise.  Everywhere else gradient descent stays in the span.
    unit = taus[active] / taus[active].norm(dim=1, keepdim=True)
    one_direction = bool(((unit @ unit.T).abs() > 1 - 1e-6).all())
    if (problem.settings.optimizer == "gd" and problem.degeneracy != "opposite" and not one_direction
            and float(delta.norm()) > 0):
        # least squares on unit-norm columns (the scales may differ by 1e12)
        basis = taus[active].T
        basis = basis / basis.norm(dim=0, keepdim=True)
        target = delta.double().reshape(-1, 1)
        fit = torch.linalg.lstsq(basis, target, driver="gelsd").solution
        # what is off the span must be rounding: small against δ, or at the working precision
        # of the task vectors themselves (a δ of 1e-7·‖τ‖ is float32 noise, in no direction);
        # float32 gradients of nearly (anti)parallel vectors lose digits to cancellation
        floor = float(taus[active].norm(dim=1).mean()) * (1e-12 if delta.dtype == torch.float64 else 1e-3)
        relative = 1e-9 if delta.dtype == torch.float64 else 1e-3
        residual = float((basis @ fit - target).norm())
        assert residual <= relative * float(target.norm()) + floor, (residual, float(target.norm()), problem.description)
        # and the reported coefficients give δ back
        rebuilt = result.coefficients @ taus
        error = float((rebuilt - target.flatten()).norm())
        assert error <= 1e-3 * float(target.norm()) + floor, ("coefficients", error, float(target.norm()), problem.description)
    at_delta, at_zero = objective(problem, delta)
    assert at_delta <= at_zero + tolerance(problem, at_zero), (at_delta, at_zero, problem.description)
    assert_merge_finite(problem, delta=delta, included=active)


@SETTINGS
@given(problems())
def test_reduced_solver_properties(problem):
    check_reduced(problem)


@SETTINGS
@given(problems())
def test_direct_solver_properties(problem):
    check_direct(problem)


# --------------------------------------------------------------------------- norms far apart


def far_apart(ratio: float, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """Three correlated task vectors, the third ``ratio`` times smaller, float64 [3, n]."""
    generator = torch.Generator().manual_seed(seed)
    common = torch.randn(n, generator=generator, dtype=torch.float64)
    taus = torch.stack([0.6 * common + torch.randn(n, generator=generator, dtype=torch.float64) for _ in range(3)])
    taus[2] *= ratio
    return taus


@pytest.mark.parametrize("optimizer", ["adam", "gd"])
@pytest.mark.parametrize("ratio", [1e-6, 1e-8])
def test_reduced_solver_with_task_vector_norms_far_apart(ratio, optimizer):
    """One task vector 1e6+ times smaller than the others (a fine-tune that barely moved a tensor).

    The objective the reduced solver reports must be the objective of the task vectors, and its δ
    must not make that objective worse than δ = 0.
    """
    taus = far_apart(ratio)
    settings = SolverSettings(optimizer=optimizer, lr=0.01 if optimizer == "adam" else 0.05)
    result = solve_reduced(gram_of_task_vectors(None, list(taus)), settings)
    problem = Problem(torch.zeros(taus.shape[1], dtype=torch.float64), list(taus), torch.ones(3), 1.0,
                      settings, f"ratio={ratio}")
    at_delta, at_zero = objective(problem, result.coefficients @ taus)
    assert math.isclose(result.initial_loss, at_zero, rel_tol=1e-6), (result.initial_loss, at_zero)
    assert at_delta <= at_zero + 1e-12, (at_delta, at_zero)
