"""Adaptive Weight Disentanglement: the redundant-vector solver.

Xiong, Cheng et al., "Multi-Task Model Merging via Adaptive Weight Disentanglement",
arXiv 2411.18729. Notation follows the paper:

* task vectors        τ_i = θ_i − θ_base,  i = 1..K  (flattened over a *scope*)
* redundant vector    δ   (same shape as a task vector)
* disentangled vector τ̂_i = τ_i − δ                                    (eq. 11)
* objective (eq. 12–14)

      L(δ) = 1/(K(K−1)) · Σ_{i≠j} |cos(τ_i − δ, τ_j − δ)|  +  α · ‖δ‖₂

* Algorithm 1: δ⁰ = 0, then N steps of gradient descent with step size β.
* AWD Task Arithmetic: θ = θ_base + λ · Σ_i w_i τ̂_i.

Two solvers share one loss-and-gradient routine:

``solve_direct``   (``core.awd_direct``) optimises the full δ ∈ Rⁿ, as the paper writes it (O(K² n) per step).
``solve_reduced``  works on the K×K Gram matrix G_ij = ⟨τ_i, τ_j⟩.  Every gradient of L is a
                   combination of the τ_k and δ, so iterates started at δ⁰ = 0 stay in
                   span{τ_k}; in an orthonormal basis Q of that span τ_i = Q r_i with
                   ⟨r_i, r_j⟩ = G_ij and δ = Q d.  Cosines and norms are preserved and plain
                   gradient descent is rotation-equivariant, so the reduced iterates are the
                   paper's iterates mapped through Q (see ``docs/awd-solver.md``).
                   The result is returned as coefficients β with δ = Σ_k β_k τ_k.

Units.  Cosines are scale-free but ‖δ‖ and the step are not, and per-tensor task-vector norms
of real models differ by orders of magnitude.  With ``units="relative"`` (the default) the
problem is solved on τ_i / s with s = mean_i ‖τ_i‖ (over non-zero task vectors): α then weighs
‖δ‖/s, and the step size β moves δ/s, so one α and one β mean the same on every tensor.
``units="absolute"`` is the paper's raw form (α weighs ‖δ‖ in weight units, β in weight units).

Design decisions (documented, tested):

* A task vector that is exactly zero (a model identical to the base on this scope) has no direction:
  it is left out of the solve, its disentangled vector is zero, not −δ.  K = 1 (or one non-zero task
  vector) has no pairs: δ = 0 and AWD reduces to task arithmetic.
* The solver returns the iterate with the lowest objective among δ⁰ = 0, δ¹ … δᴺ, so the
  returned δ is never worse than δ = 0 (the objective is non-smooth and fixed-step descent
  oscillates around its minimum).  Both solvers select identically.
* float64 on the K-dimensional side, float32-or-better on the tensor side, whatever the weights' dtype.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal, Optional, Sequence, Tuple, get_args

import torch

from mergekit_awd.core.awd_descent import descend
from mergekit_awd.core.selection import DEFAULT_SELECT, Select
from mergekit_awd.core.settings import setting, subset, validate_settings
from mergekit_awd.core.task_vectors import combine, mean_offdiag, pairwise_abs_cos
from mergekit_awd.errors import InvalidSettingError, TensorError

Optimizer = Literal["gd", "adam", "sgd"]
Units = Literal["relative", "absolute"]
Solver = Literal["reduced", "direct"]
Scope = Literal["tensor", "model", "row"]
# combine: the method that merges the disentangled task vectors τ_i − δ.  The core knows only the
# paper's, AWD Task Arithmetic; the others are registered merge methods (mergekit's task-vector methods
# and every method of this package that declares itself combinable), listed by the adapter from the
# registry (``mergekit_adapter.combine.combining_methods``), which also refuses any other name.
TASK_ARITHMETIC = "task_arithmetic"
# λ with combine: task_arithmetic when none is given (the MiniLM benchmark's validation choice);
# with any other combine, λ and normalize default to the combining method's own defaults.
TASK_ARITHMETIC_LAMBDA = 0.3

OPTIMIZERS: Tuple[str, ...] = get_args(Optimizer)
UNITS: Tuple[str, ...] = get_args(Units)

# The most solver iterations a merge may ask for: 10⁴ Adam steps take seconds per tensor on the
# direct solver already, and the defaults converge in 10² (benchmarks/speed/awd_convergence.py).
MAX_STEPS = 10_000


@dataclass(frozen=True)
class SolverSettings:
    """Settings of the δ optimisation (paper Algorithm 1): the single source of their defaults,
    choices and ranges (the ``awd`` and ``tsv`` parameter specs are generated from them).

    alpha:     α ≥ 0, weight of ‖δ‖₂ in the objective (relative or absolute units).
    steps:     N, number of optimiser iterations, 1 … ``MAX_STEPS``.
    lr:        β > 0, step size (relative or absolute units).
    optimizer: "gd" (the paper's plain gradient descent), "adam", or "sgd" (heavy-ball momentum and
               weight decay as torch.optim.SGD: the authors' released code).
    momentum, weight_decay: of ``optimizer: sgd`` (the authors': 0.9 and 1e-4).
    units:     "relative" (scale-free, default) or "absolute" (the paper's raw form).
    """

    alpha: float = setting(0.03, "α, weight of ‖δ‖ (relative units by default)", ge=0, group="solver")
    steps: int = setting(100, f"N, solver iterations, 1 to {MAX_STEPS}", ge=1, le=MAX_STEPS, group="solver")
    lr: float = setting(0.01, "β, solver step size", gt=0, group="solver")
    optimizer: Optimizer = setting("adam", "gd: the paper's Algorithm 1; adam; sgd: momentum + weight decay",
                                   group="solver")
    momentum: float = setting(0.9, "momentum (optimizer: sgd)", ge=0, le=0.999, group="solver")
    weight_decay: float = setting(1e-4, "weight decay (optimizer: sgd)", ge=0, group="solver")
    units: Units = setting("relative", "relative: α and lr relative to mean ‖τ_i‖; absolute: paper's raw form",
                           group="solver")

    def __post_init__(self) -> None:
        validate_settings(self)


# The (scope, solver, optimizer) combinations no merge may ask for (None: any optimizer), and why:
# the one home of these rules (``AWDParameters`` refuses them, so validation does before loading).
REFUSED_COMBINATIONS = {
    ("row", "direct", "adam"): "solver: direct with scope: row runs optimizer gd or sgd (Adam's reduced form is "
                               "not the full-size Adam); use solver: reduced",
    ("model", "direct", None): "solver: direct holds the full δ of its scope and works with scope: tensor or row; "
                               "use solver: reduced (exact, same δ) with scope: model",
}


@dataclass(frozen=True)
class AWDParameters(SolverSettings):
    """Every parameter of the ``awd`` merge method (besides the per-model ``weight``).

    lam:          λ, scale of Σ_i w_i (τ_i − δ) (YAML ``lambda``); None: ``TASK_ARITHMETIC_LAMBDA``
                  with combine: task_arithmetic, else the combining method's default.
    normalize:    divide Σ_i w_i (τ_i − δ) by Σ_i w_i (mergekit's convention); None: false with
                  combine: task_arithmetic, else the combining method's default.
    combine:      the method that merges the disentangled vectors τ_i − δ ("task_arithmetic": the
                  paper's AWD Task Arithmetic; any other name: that method run on θ_base + τ_i − δ).
    solver:       "reduced" (exact K-dimensional solve) or "direct" (the full δ, scope tensor only).
    scope:        "tensor" (one δ per tensor), "model" (one δ over all selected tensors) or "row"
                  (one δ per output row of each 2-D tensor, ``core.awd_rows``).
    select:       which tensors are disentangled (``core.selection``).
    check_finite: refuse NaN/Inf inputs (false: merge them anyway).
    """

    lam: Optional[float] = setting(None, f"λ, scale of Σ_i w_i (τ_i − δ); default {TASK_ARITHMETIC_LAMBDA} with "
                                   "combine: task_arithmetic, else the combining method's default", name="lambda")
    normalize: Optional[bool] = setting(None, "divide the weighted sum by Σ_i w_i; default false with combine: "
                                        "task_arithmetic, else the combining method's default")
    combine: str = setting(TASK_ARITHMETIC, "the method that merges the disentangled τ_i − δ: task_arithmetic "
                           "(the paper's) or a method that merges task vectors (its name)")
    solver: Solver = setting("reduced", "reduced: exact K-dimensional solve; direct: full-size δ")
    scope: Scope = setting("tensor", "tensor: one δ per tensor; model: one δ over all selected tensors; "
                           "row: one δ per output row of each 2-D tensor")
    select: Select = setting(DEFAULT_SELECT, "which tensors are disentangled")
    check_finite: bool = setting(True, "refuse inputs with NaN/Inf (false: merge them anyway)")

    def __post_init__(self) -> None:
        super().__post_init__()
        for (scope, solver, optimizer), reason in REFUSED_COMBINATIONS.items():
            if (self.scope == scope and self.solver == solver
                    and (optimizer is None or self.optimizer == optimizer)):
                raise InvalidSettingError(reason, name="solver")

    def solver_settings(self) -> SolverSettings:
        return subset(SolverSettings, self)

    @property
    def sum_lambda(self) -> float:
        """λ of AWD Task Arithmetic (combine: task_arithmetic)."""
        return TASK_ARITHMETIC_LAMBDA if self.lam is None else self.lam

    @property
    def sum_normalize(self) -> bool:
        """normalize of AWD Task Arithmetic (combine: task_arithmetic)."""
        return bool(self.normalize)


@dataclass(frozen=True)
class SolveResult:
    """Outcome of one δ solve over one scope.

    coefficients:  β (float64, [K]) with δ = Σ_k β_k τ_k; zero for excluded (zero) task vectors.
    loss:          objective at the returned δ (in the solver's units).
    initial_loss:  objective at δ = 0.
    mean_abs_cos_before / after: 1/(K(K−1)) Σ_{i≠j} |cos| at δ = 0 and at the returned δ.
    delta_norm_ratio: ‖δ‖ / mean_i ‖τ_i‖ (dimensionless).
    steps:         iterations run;  best_step: iteration whose iterate was returned (0 = δ⁰).
    active:        number of non-zero task vectors that took part in the solve.
    """

    coefficients: torch.Tensor
    loss: float
    initial_loss: float
    mean_abs_cos_before: float
    mean_abs_cos_after: float
    delta_norm_ratio: float
    steps: int
    best_step: int
    active: int
    abs_cos_before: torch.Tensor
    abs_cos_after: torch.Tensor

    def summary(self) -> dict:
        """JSON-ready numbers (tensors as nested lists)."""
        out = asdict(self)
        for key in ("coefficients", "abs_cos_before", "abs_cos_after"):
            out[key] = getattr(self, key).tolist()
        return out


def awd_loss_and_grad(
    points: torch.Tensor, delta: torch.Tensor, alpha: float, pair_count: int
) -> Tuple[float, torch.Tensor]:
    """AWD objective (eq. 12–14) and its gradient with respect to δ.

    points: [K, m] task vectors (or their coordinates in an orthonormal basis).
    delta:  [m] redundant vector.  pair_count: K(K−1) of the whole scope.
    Returns (loss as a Python float, ∂L/∂δ [m]).  With u_i = τ_i − δ, n_i = ‖u_i‖, û_i = u_i/n_i,
    C_ij = ⟨û_i, û_j⟩ (i ≠ j, C_ii = 0) and s_ij = sign(C_ij):
        ∂|C_ij|/∂u_i = s_ij (û_j − C_ij û_i) / n_i,
    so ∂/∂δ of the cosine term is −2/(K(K−1)) Σ_i (1/n_i) (Σ_j s_ij û_j − (Σ_j |C_ij|) û_i).
    A vector with n_i = 0 has no direction: û_i = 0, so its pairs count 0 with 0 gradient.
    ∂‖δ‖/∂δ = δ/‖δ‖, and 0 at δ = 0 (the minimum-norm subgradient).
    Written with few tensor operations: it runs once per solver step, and on the reduced
    problem (K ≤ 8 numbers per vector) the cost is the number of operations, not their size.
    """
    residual = points - delta
    # clamping at the dtype's smallest normal number turns a zero vector into a zero direction
    tiny = torch.finfo(residual.dtype).tiny
    inverse_norms = torch.linalg.vector_norm(residual, dim=1).clamp_min_(tiny).reciprocal_()
    unit = residual.mul_(inverse_norms[:, None])
    cos = unit @ unit.T
    cos.fill_diagonal_(0.0)
    sign = torch.sign(cos)
    row_abs = cos.abs_().sum(dim=1, keepdim=True)
    scale = 1.0 / pair_count if pair_count > 0 else 0.0
    norm_value = float(torch.linalg.vector_norm(delta))
    loss = float(row_abs.sum()) * scale + alpha * norm_value
    # Σ_i (1/n_i)(Σ_j s_ij û_j − row_abs_i û_i), as one vector–matrix product
    grad = inverse_norms @ torch.addcmul(sign @ unit, row_abs, unit, value=-1.0)
    grad.mul_(-2.0 * scale)
    if norm_value > 0:
        grad.add_(delta, alpha=alpha / norm_value)
    return loss, grad


def minimise(
    points: torch.Tensor, settings: SolverSettings, pair_count: int
) -> Tuple[torch.Tensor, float, float, int]:
    """Run Algorithm 1 (or Adam, or SGD: ``core.awd_descent``) from δ⁰ = 0 on ``points`` [K, m],
    already scaled to the solver's units.  Returns (best δ [m], its loss, loss at δ = 0, index of
    the best iterate)."""
    with torch.inference_mode():
        start = torch.zeros(points.shape[1], dtype=points.dtype, device=points.device)
        result = descend(lambda delta: awd_loss_and_grad(points, delta, settings.alpha, pair_count), start, settings)
    return result.delta, result.loss, result.initial_loss, result.best_step


def _scope_scale(gram: torch.Tensor, active: torch.Tensor, units: str) -> float:
    """s = mean ‖τ_i‖ over non-zero task vectors (relative units), or 1 (absolute units)."""
    if units == "absolute" or not bool(active.any()):
        return 1.0
    return float(gram.diagonal()[active].sqrt().mean())


def orthonormal_coordinates(gram: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Coordinates of the task vectors in an orthonormal basis of their span.

    The decomposition is made on the cosine matrix C = D^{-1/2} G D^{-1/2} (D = diag G, all
    positive), so that the rank cut-off judges linear dependence, not scale: a task vector 10⁸
    times shorter than the others keeps its direction.  With C = V Λ Vᵀ (positive part) and the
    orthonormal basis Q = T D^{-1/2} V Λ^{-1/2}:
        r_i = ‖τ_i‖ · (V Λ^{1/2})_i          (rows of R [K, m]; R Rᵀ = G)
        δ = Q d = T β,   β = D^{-1/2} V Λ^{-1/2} d   (M = D^{-1/2} V Λ^{-1/2} [K, m] is returned)
    """
    gram = gram.to(torch.float64)
    norms = gram.diagonal().clamp_min(0).sqrt()
    inverse = torch.where(norms > 0, 1.0 / torch.where(norms > 0, norms, 1.0), 0.0)
    cosine = gram * inverse[:, None] * inverse[None, :]
    eigenvalues, eigenvectors = torch.linalg.eigh(cosine)
    top = float(eigenvalues.max()) if eigenvalues.numel() else 0.0
    keep = eigenvalues > max(top, 0.0) * 1e-12
    if not bool(keep.any()):
        empty = gram.new_zeros((gram.shape[0], 0))
        return empty, empty
    values = eigenvalues[keep]
    vectors = eigenvectors[:, keep]
    return vectors * values.sqrt() * norms[:, None], vectors / values.sqrt() * inverse[:, None]


def solve_reduced(gram: torch.Tensor, settings: SolverSettings) -> SolveResult:
    """Exact K-dimensional AWD solve from the Gram matrix G [K, K] (any float dtype).

    Cost O(N K²) whatever the tensor size.  Returns β with δ = Σ_k β_k τ_k.
    """
    gram = gram.to(device="cpu", dtype=torch.float64)
    if not bool(torch.isfinite(gram).all()):
        raise TensorError("Gram matrix of the task vectors is not finite")
    k = gram.shape[0]
    active = gram.diagonal() > 0
    idx = active.nonzero().flatten()
    pair_count = k * (k - 1)
    scale = _scope_scale(gram, active, settings.units)
    abs_cos = pairwise_abs_cos(gram)
    before = mean_offdiag(abs_cos)
    coefficients = torch.zeros(k, dtype=torch.float64)
    if idx.numel() < 2 or settings.steps == 0:
        return SolveResult(coefficients, before, before, before, before, 0.0, settings.steps, 0,
                           int(idx.numel()), abs_cos, abs_cos)
    sub = gram[idx][:, idx] / (scale * scale)
    coords, to_coefficients = orthonormal_coordinates(sub)
    best, loss, initial, best_step = minimise(coords, settings, pair_count)
    coefficients[idx] = to_coefficients @ best
    after = pairwise_abs_cos(_disentangled_gram(gram, coefficients, active))
    return SolveResult(
        coefficients=coefficients,
        loss=loss,
        initial_loss=initial,
        mean_abs_cos_before=before,
        mean_abs_cos_after=mean_offdiag(after),
        delta_norm_ratio=_delta_norm_ratio(gram, coefficients, active),
        steps=settings.steps,
        best_step=best_step,
        active=int(idx.numel()),
        abs_cos_before=abs_cos,
        abs_cos_after=after,
    )


def _delta_norm_ratio(gram: torch.Tensor, coefficients: torch.Tensor, active: torch.Tensor) -> float:
    """‖δ‖ / mean_i ‖τ_i‖ over active task vectors, with ‖δ‖² = βᵀGβ."""
    mean_norm = float(gram.diagonal()[active].sqrt().mean())
    return math.sqrt(max(float(coefficients @ gram @ coefficients), 0.0)) / mean_norm


def _disentangled_gram(gram: torch.Tensor, coefficients: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Gram matrix of τ̂_i = τ_i − δ (δ = Σ β_k τ_k) for active i; zero rows for excluded ones.

    ⟨τ_i − δ, τ_j − δ⟩ = G_ij − (Gβ)_i − (Gβ)_j + βᵀGβ.
    """
    g_beta = gram @ coefficients
    out = gram - g_beta[:, None] - g_beta[None, :] + coefficients @ g_beta
    mask = active[:, None] & active[None, :]
    return torch.where(mask, out, torch.zeros_like(out))


def sum_scale(weights: torch.Tensor, lam: float, normalize: bool) -> float:
    """λ/Z with Z = Σ_i w_i when ``normalize`` (and Σ w_i ≠ 0), else Z = 1 (mergekit's convention)."""
    total = float(weights.to(torch.float64).cpu().sum())
    return lam / total if normalize and abs(total) > 1e-8 else lam


def merge_coefficients(
    weights: torch.Tensor,
    lam: float,
    *,
    coefficients: Optional[torch.Tensor] = None,
    included: Optional[torch.Tensor] = None,
    normalize: bool = False,
) -> Tuple[torch.Tensor, float]:
    """Fold AWD Task Arithmetic into one weighted sum of task vectors.

    θ = θ_base + λ/Z · Σ_i w_i (τ_i − δ),  Z = Σ_i w_i if ``normalize`` else 1,  δ = Σ_k β_k τ_k
      = θ_base + Σ_i c_i τ_i,              c_i = λ/Z · (w_i − S β_i),  S = Σ_{j∈included} w_j.
    ``included`` marks task vectors that took part in the solve: excluded (zero) ones have
    τ̂_i = 0, not −δ.  Returns (c [K] float64, λ/Z · S: the factor of a full δ tensor).
    """
    w = weights.to(torch.float64).cpu()
    if included is None:
        included = torch.ones(w.shape[0], dtype=torch.bool)
    scale = sum_scale(w, lam, normalize)
    shift = float(w[included.cpu()].sum())
    c = scale * w
    if coefficients is not None:
        c = c - scale * shift * coefficients.to(torch.float64).cpu()
    return c, scale * shift


def merge_disentangled(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    weights: torch.Tensor,
    lam: float,
    *,
    coefficients: Optional[torch.Tensor] = None,
    delta: Optional[torch.Tensor] = None,
    included: Optional[torch.Tensor] = None,
    normalize: bool = False,
    out_dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """AWD Task Arithmetic: θ = θ_base + λ/Z · Σ_i w_i (τ_i − δ) from the raw tensors θ_i.

    δ is given as coefficients β (δ = Σ_k β_k τ_k, folded into one pass, see
    ``merge_coefficients``) or as a full tensor ``delta`` (the direct solver); neither gives
    plain task arithmetic.  Returned in ``out_dtype`` (default: the working dtype).
    """
    c, delta_factor = merge_coefficients(
        weights, lam, coefficients=coefficients, included=included, normalize=normalize
    )
    if delta is None or delta_factor == 0.0:
        return combine(base, models, c, out_dtype=out_dtype)
    merged = combine(base, models, c)
    merged.sub_(delta.to(device=merged.device, dtype=merged.dtype), alpha=delta_factor)
    return merged if out_dtype is None else merged.to(out_dtype)


def disentangled_task_vectors(task_vectors: torch.Tensor, delta: torch.Tensor, included: torch.Tensor,
                              inplace: bool = False) -> torch.Tensor:
    """τ̂_i = τ_i − δ (eq. 11) for the task vectors δ was solved over; the others stay τ_i (a zero
    task vector has no direction and stays zero, not −δ).

    task_vectors: [K, *shape]; delta: [*shape]; included: [K] (one δ for the tensor) or [R, K]
    (``scope: row``: which rows τ_i[r] took part, δ of shape [R, C]).  Working dtype of the stack;
    ``inplace`` overwrites a float32-or-wider stack instead of allocating another.
    """
    stack = task_vectors.to(torch.promote_types(task_vectors.dtype, torch.float32))
    if not inplace and stack is task_vectors:
        stack = stack.clone()
    d = delta.to(device=stack.device, dtype=stack.dtype)
    for i in range(stack.shape[0]):  # one task vector at a time: no [K, *shape] temporary
        if included.ndim == 1:
            if bool(included[i]):
                stack[i].sub_(d)
        else:
            stack[i].sub_(d * included[:, i].to(device=stack.device, dtype=stack.dtype)[:, None])
    return stack
