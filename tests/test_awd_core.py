"""The pure-torch AWD core on plain tensors."""

import math

import pytest
import torch

from mergekit_awd.core.awd import (
    SolverSettings,
    awd_loss_and_grad,
    merge_disentangled,
    solve_reduced,
)
from mergekit_awd.core.awd_direct import solve_direct
from mergekit_awd.core.task_vectors import gram_matrix, redundant_vector
from reference_awd import paper_delta


def correlated(k: int, n: int, dtype=torch.float64, seed: int = 0, shared: float = 0.8, scale: float = 1e-3):
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(n, generator=g, dtype=torch.float64)
    tv = torch.stack([shared * common + torch.randn(n, generator=g, dtype=torch.float64) for _ in range(k)])
    return (tv * scale).to(dtype)


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.mark.parametrize("k", [2, 4, 8])
def test_reduced_equals_direct_with_gradient_descent_float64(k):
    tv = correlated(k, 3000, seed=k)
    settings = SolverSettings(alpha=0.01, steps=200, lr=0.05, optimizer="gd")
    reduced = solve_reduced(gram_matrix(tv), settings)
    direct = solve_direct(tv, settings)
    assert float(direct.delta.norm()) > 0
    assert relative_difference(redundant_vector(tv, reduced.coefficients), direct.delta) < 1e-5
    assert reduced.best_step == direct.summary.best_step
    assert math.isclose(reduced.loss, direct.summary.loss, rel_tol=1e-9)


def test_reduced_equals_direct_with_gradient_descent_float32():
    tv = correlated(4, 5000, dtype=torch.float32, seed=3)
    settings = SolverSettings(alpha=0.01, steps=200, lr=0.05, optimizer="gd")
    reduced = solve_reduced(gram_matrix(tv), settings)
    direct = solve_direct(tv, settings)
    assert direct.delta.dtype == torch.float32
    assert relative_difference(redundant_vector(tv, reduced.coefficients), direct.delta) < 1e-4


def test_solvers_match_an_independent_autograd_implementation_of_algorithm_1():
    tv = correlated(3, 400, seed=5)
    settings = SolverSettings(alpha=0.02, steps=60, lr=0.05, optimizer="gd")
    expected = paper_delta(list(tv), settings.alpha, settings.lr, settings.steps)
    reduced = redundant_vector(tv, solve_reduced(gram_matrix(tv), settings).coefficients)
    assert relative_difference(reduced, expected) < 1e-8


@pytest.mark.parametrize("k", [3, 6])
def test_reduced_adam_reaches_a_loss_no_higher_than_direct_adam(k):
    tv = correlated(k, 4000, seed=10 + k)
    settings = SolverSettings(alpha=0.01, steps=300, lr=0.01, optimizer="adam")
    reduced = solve_reduced(gram_matrix(tv), settings)
    direct = solve_direct(tv, settings)
    assert reduced.loss <= direct.summary.loss + 1e-12


def test_direct_delta_lies_in_the_span_of_the_task_vectors():
    tv = correlated(4, 2000, seed=7)
    direct = solve_direct(tv, SolverSettings(alpha=0.01, steps=100, lr=0.05, optimizer="gd"))
    basis = tv.T
    coefficients = torch.linalg.lstsq(basis, direct.delta[:, None]).solution
    residual = basis @ coefficients - direct.delta[:, None]
    assert float(residual.norm()) < 1e-10 * float(direct.delta.norm())


def test_disentangling_lowers_mean_abs_cosine_of_correlated_task_vectors():
    result = solve_reduced(gram_matrix(correlated(5, 2000, seed=1)), SolverSettings())
    assert result.mean_abs_cos_before > 0.3
    assert result.mean_abs_cos_after < 0.5 * result.mean_abs_cos_before
    assert result.loss <= result.initial_loss


def test_single_task_vector_gives_zero_delta():
    result = solve_reduced(gram_matrix(correlated(1, 100)), SolverSettings())
    assert torch.equal(result.coefficients, torch.zeros(1, dtype=torch.float64))
    assert result.mean_abs_cos_before == 0.0 and result.active == 1


def test_zero_task_vector_is_excluded_without_nan():
    tv = correlated(3, 500, seed=2)
    tv[1] = 0
    for settings in (SolverSettings(optimizer="gd", lr=0.05), SolverSettings()):
        result = solve_reduced(gram_matrix(tv), settings)
        assert torch.isfinite(result.coefficients).all()
        assert result.coefficients[1] == 0 and result.active == 2
        direct = solve_direct(tv, settings)
        assert torch.isfinite(direct.delta).all()
    base = torch.randn(500, dtype=torch.float64)
    delta = redundant_vector(tv, result.coefficients)
    included = gram_matrix(tv).diagonal() > 0
    models = list(base + tv)
    merged = merge_disentangled(base, models, torch.ones(3), 1.0, coefficients=result.coefficients, included=included)
    # the zero model contributes nothing: not −δ
    expected = base + (tv[0] - delta) + (tv[2] - delta)
    assert torch.allclose(merged, expected)
    via_delta = merge_disentangled(base, models, torch.ones(3), 1.0, delta=delta, included=included)
    assert torch.allclose(via_delta, expected)


def test_merge_weights_lambda_and_normalize():
    tv = correlated(3, 50, seed=11)
    base = torch.randn(50, dtype=torch.float64)
    beta = torch.tensor([0.2, -0.1, 0.3], dtype=torch.float64)
    w = torch.tensor([1.0, 0.5, 2.0])
    delta = redundant_vector(tv, beta)
    expected = base + 0.4 / 3.5 * sum(wi * (t - delta) for wi, t in zip(w.tolist(), tv))
    got = merge_disentangled(base, list(base + tv), w, 0.4, coefficients=beta, normalize=True)
    assert torch.allclose(got, expected)


def test_streaming_passes_match_dense_arithmetic_across_chunk_boundaries():
    from mergekit_awd.core.task_vectors import combine, gram_of_task_vectors

    base = torch.randn(7, 1000, dtype=torch.float32)
    models = [base + 1e-2 * torch.randn(7, 1000) for _ in range(3)]
    dense = torch.stack([(m - base).double().reshape(-1) for m in models])
    gram = gram_of_task_vectors(base, models, chunk=999)
    assert torch.allclose(gram, dense @ dense.T, rtol=1e-12)
    assert torch.equal(gram, gram_of_task_vectors(base, models, chunk=999))  # fixed summation order
    c = torch.tensor([0.5, -0.25, 2.0], dtype=torch.float64)
    before = [m.clone() for m in models]
    out = combine(base, models, c, out_dtype=torch.bfloat16, chunk=333)
    assert all(torch.equal(a, b) for a, b in zip(models, before))  # inputs are never modified
    expected = base.double() + sum(ci * (m.double() - base.double()) for ci, m in zip(c.tolist(), models))
    assert out.dtype == torch.bfloat16 and out.shape == base.shape
    assert torch.allclose(out.double(), expected.to(torch.bfloat16).double(), atol=1e-2)


def test_all_zero_and_identical_task_vectors_stay_finite():
    zero = solve_reduced(torch.zeros(3, 3, dtype=torch.float64), SolverSettings())
    assert torch.equal(zero.coefficients, torch.zeros(3, dtype=torch.float64))
    same = correlated(1, 300).repeat(3, 1)
    result = solve_reduced(gram_matrix(same), SolverSettings())
    assert torch.isfinite(result.coefficients).all()
    assert result.mean_abs_cos_before == pytest.approx(1.0)


def test_loss_gradient_matches_finite_differences():
    tv = correlated(4, 30, seed=9)
    delta = 0.3 * tv.mean(0)
    loss, grad = awd_loss_and_grad(tv, delta, alpha=0.1, pair_count=12)
    eps = 1e-7
    numeric = torch.zeros_like(delta)
    for i in range(delta.numel()):
        step = torch.zeros_like(delta)
        step[i] = eps
        numeric[i] = (awd_loss_and_grad(tv, delta + step, 0.1, 12)[0] - awd_loss_and_grad(tv, delta - step, 0.1, 12)[0]) / (2 * eps)
    assert torch.allclose(grad, numeric, atol=1e-5)


def test_relative_units_are_scale_free():
    tv = correlated(4, 1000, seed=4)
    settings = SolverSettings()
    a = solve_reduced(gram_matrix(tv), settings).coefficients
    b = solve_reduced(gram_matrix(tv * 1e4), settings).coefficients
    assert torch.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_low_precision_inputs_are_solved_in_float32():
    tv = correlated(3, 1000, dtype=torch.bfloat16, seed=6, scale=1.0)
    gram = gram_matrix(tv)
    assert gram.dtype == torch.float64
    assert torch.allclose(gram, gram_matrix(tv.float()))
    direct = solve_direct(tv, SolverSettings(steps=20))
    assert direct.delta.dtype == torch.float32


def test_solver_is_deterministic():
    tv = correlated(5, 2000, seed=8)
    first = solve_reduced(gram_matrix(tv), SolverSettings())
    second = solve_reduced(gram_matrix(tv), SolverSettings())
    assert torch.equal(first.coefficients, second.coefficients)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"alpha": -1.0}, "alpha"), ({"alpha": float("nan")}, "alpha"), ({"steps": -1}, "steps"),
     ({"lr": 0.0}, "lr"), ({"optimizer": "lbfgs"}, "optimizer"), ({"units": "raw"}, "units"),
         ({"momentum": 1.0}, "momentum"), ({"weight_decay": -1e-4}, "weight_decay")],
)
def test_invalid_solver_settings_are_rejected(kwargs, word):
    with pytest.raises(ValueError, match=word):
        SolverSettings(**kwargs)
