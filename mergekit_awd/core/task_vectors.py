"""Task-vector kernels shared by every method: working dtype, streaming Gram, chunked combine.

Task vectors τ_i = θ_i − θ_base are never materialised as a [K, n] stack where a streaming pass
does: ``gram_of_task_vectors`` sums G_ij = ⟨τ_i, τ_j⟩ chunk by chunk in float64, and ``combine``
writes θ_base + Σ_i c_i τ_i chunk by chunk.  Everything is computed in float32 (float64 for float64
weights) whatever the weights' dtype (``working_dtype``).  Pure torch.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import torch

from mergekit_awd.errors import TensorError


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other dtype is solved in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def flatten_task_vectors(task_vectors: torch.Tensor) -> torch.Tensor:
    """[K, *shape] → [K, n] in float32 or float64 (a view when already in that dtype)."""
    flat = task_vectors.reshape(task_vectors.shape[0], -1)
    return flat.to(working_dtype(flat.dtype))


# Elements per chunk of the combining pass: bounds its scratch memory (a few 2²²-element float32
# temporaries, 16 MiB each, less than mergekit's own K full-size temporaries for large tensors) and
# keeps the operation count low.
CHUNK_ELEMENTS = 1 << 22


# Elements per chunk of the Gram pass: small enough for the K scratch rows (float32 and float64) to
# stay in cache, and it fixes the order in which the Gram matrix is summed.
GRAM_CHUNK_ELEMENTS = 1 << 16


def _flat(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.reshape(-1)


def gram_of_task_vectors(
    base: Optional[torch.Tensor], models: Sequence[torch.Tensor], chunk: int = GRAM_CHUNK_ELEMENTS
) -> torch.Tensor:
    """G_ij = ⟨θ_i − θ_base, θ_j − θ_base⟩ (θ_base = 0 when ``base`` is None); float64 [K, K] on CPU.

    Streams over fixed-size chunks without allocating a [K, n] stack: the differences are formed
    in the working dtype (exact for bfloat16/float16 inputs), their products and sums in float64,
    chunk after chunk in a fixed order.  Float64 products keep exact linear dependence exact (two
    collinear bfloat16 task vectors give a rank-1 G, which the reduced solver relies on); the
    2¹⁶-element chunks keep the scratch buffers in cache, which is what makes the pass fast.
    Squared weight units.  Gram matrices of several tensors add up to the Gram matrix of their
    concatenation (docs/awd-solver.md, Fact 3).
    """
    flats = [_flat(m) for m in models]
    k = len(flats)
    if k == 0:
        return torch.zeros((0, 0), dtype=torch.float64)
    device = flats[0].device
    work = working_dtype(flats[0].dtype if base is None else torch.promote_types(base.dtype, flats[0].dtype))
    flat_base = _flat(base) if base is not None else None
    n = flats[0].numel()
    size = max(1, min(chunk, n))
    diff = torch.empty((k, size), dtype=work, device=device)
    wide = diff if work == torch.float64 else torch.empty((k, size), dtype=torch.float64, device=device)
    base_rows = torch.empty((size,), dtype=work, device=device) if flat_base is not None else None
    gram = torch.zeros((k, k), dtype=torch.float64, device=device)
    for start in range(0, n, size):
        stop = min(start + size, n)
        rows, wide_rows = diff[:, : stop - start], wide[:, : stop - start]
        for index, flat in enumerate(flats):
            rows[index].copy_(flat[start:stop])
        if base_rows is not None:
            base_chunk = base_rows[: stop - start]
            base_chunk.copy_(flat_base[start:stop])
            rows.sub_(base_chunk)
        if wide is not diff:
            wide_rows.copy_(rows)
        gram.addmm_(wide_rows, wide_rows.T)
    return gram.cpu()


def gram_matrix(task_vectors: torch.Tensor) -> torch.Tensor:
    """G_ij = ⟨τ_i, τ_j⟩ over all elements of a [K, *shape] stack; float64 [K, K] on CPU."""
    return gram_of_task_vectors(None, list(task_vectors))


def pairwise_abs_cos(gram: torch.Tensor) -> torch.Tensor:
    """|cos(τ_i, τ_j)| from a Gram matrix (0 where a vector is zero); float64 [K, K]."""
    gram = gram.to(torch.float64)
    norms = gram.diagonal().clamp_min(0).sqrt()
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / torch.where(denom > 0, denom, 1.0), 0.0)
    return cos.abs().clamp_max(1.0)


def mean_offdiag(matrix: torch.Tensor) -> float:
    """1/(K(K−1)) Σ_{i≠j} M_ij; 0 for K < 2."""
    k = matrix.shape[0]
    if k < 2:
        return 0.0
    return float((matrix.sum() - matrix.diagonal().sum()) / (k * (k - 1)))


def redundant_vector(task_vectors: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """δ = Σ_k β_k τ_k for a [K, *shape] stack; working dtype, the stack's device."""
    stack = task_vectors.to(working_dtype(task_vectors.dtype))
    beta = coefficients.to(device=stack.device, dtype=stack.dtype)
    return torch.tensordot(beta, stack, dims=1)


def combine(
    base: torch.Tensor,
    models: Sequence[torch.Tensor],
    c: torch.Tensor,
    out_dtype: Optional[torch.dtype] = None,
    chunk: int = CHUNK_ELEMENTS,
) -> torch.Tensor:
    """θ_base + Σ_i c_i (θ_i − θ_base), computed chunk by chunk in the working dtype.

    Reads the raw inputs (no task-vector stack is allocated) and writes each chunk straight into
    an output of ``out_dtype`` (default: the working dtype).
    """
    work = working_dtype(torch.promote_types(base.dtype, models[0].dtype) if models else base.dtype)
    out = torch.empty(base.shape, dtype=out_dtype or work, device=base.device)
    flat_out, flat_base = _flat(out), _flat(base)
    flats = [_flat(m) for m in models]
    factors = [float(x) for x in c.tolist()]
    for start in range(0, flat_base.numel(), chunk):
        stop = start + chunk
        piece = flat_base[start:stop].to(work)
        acc = piece.clone()
        for factor, flat in zip(factors, flats):
            if factor != 0.0:
                acc.add_(flat[start:stop].to(work) - piece, alpha=factor)  # never in place on inputs
        flat_out[start:stop] = acc
    return out


def task_vector_stack(
    base: torch.Tensor, models: Sequence[torch.Tensor], device: Optional[torch.device] = None
) -> torch.Tensor:
    """τ_i = θ_i − θ_base as a [K, *shape] stack in the working dtype (for the direct solver)."""
    dtype = working_dtype(torch.promote_types(base.dtype, models[0].dtype) if models else base.dtype)
    device = device if device is not None else base.device
    stack = torch.empty((len(models), *base.shape), dtype=dtype, device=device)
    base_w = base.to(device=device, dtype=dtype)
    for index, model in enumerate(models):
        stack[index].copy_(model)
        stack[index].sub_(base_w)
    return stack


def require_same_shape(name: str, base_label: Any, base: torch.Tensor,
                       inputs: Sequence[Tuple[Any, torch.Tensor]]) -> None:
    """``TensorError`` (a ValueError) naming the tensor and the model when an input's shape differs
    from the base's (a task vector θ_i − θ_base needs both of one shape): the one shape check of
    every reader."""
    for label, tensor in inputs:
        if tensor.shape != base.shape:
            raise TensorError(f"{name}: shape {tuple(tensor.shape)} in {label} differs from "
                              f"{tuple(base.shape)} in the base model {base_label}", tensor=name, model=str(label))


def mean_task_vector(task_vectors: torch.Tensor, weights: Optional[Sequence[float]] = None) -> torch.Tensor:
    """(1/K) Σ_i w_i τ_i over a [K, *shape] stack: the paper's treatment of non-matrix tensors."""
    stack = task_vectors.to(working_dtype(task_vectors.dtype))
    k = stack.shape[0]
    if weights is None:
        return stack.mean(dim=0)
    w = torch.as_tensor(weights, dtype=stack.dtype, device=stack.device)
    if w.shape != (k,):
        raise TensorError(f"got {tuple(w.shape)} weights for {k} task vectors")
    return torch.tensordot(w, stack, dims=1) / k


def stable_svd(matrix: torch.Tensor):
    """``torch.linalg.svd(matrix, full_matrices=False)``, retried in float64 when LAPACK's divide and
    conquer fails to converge (it does on ill-conditioned float32 matrices with many tiny, nearly
    repeated singular values, such as a residual after projecting out a subspace); the factors
    come back in ``matrix``'s dtype."""
    try:
        return torch.linalg.svd(matrix, full_matrices=False)
    except torch.linalg.LinAlgError:
        if matrix.dtype == torch.float64:
            raise
        u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
        return u.to(matrix.dtype), s.to(matrix.dtype), vh.to(matrix.dtype)


def weighted_task_matrices(task_matrices: torch.Tensor, weights: Optional[Sequence[float]] = None
                           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """A [K, m, n] stack in the working dtype with w_i τ_i, checked finite: (the non-zero task matrices,
    their squared Frobenius norms).  Zero task matrices (a model identical to the base, or w_i = 0)
    are left out: methods that divide by ‖τ_i‖ or take τ_i's directions cannot use them."""
    if task_matrices.ndim != 3:
        raise TensorError(f"expected a [K, m, n] stack of task matrices, got shape {tuple(task_matrices.shape)}")
    work = working_dtype(task_matrices.dtype)
    stack = task_matrices.to(work)
    if weights is not None:
        w = torch.as_tensor(list(weights), dtype=work, device=stack.device)
        if w.shape != (stack.shape[0],):
            raise TensorError(f"got {tuple(w.shape)} weights for {stack.shape[0]} task matrices")
        stack = stack * w[:, None, None]
    if not bool(torch.isfinite(stack).all()):
        raise TensorError("task matrices have non-finite entries")
    norms_sq = stack.reshape(stack.shape[0], -1).pow(2).sum(dim=1)
    keep = norms_sq > 0
    return stack[keep], norms_sq[keep]


def span_coefficients(vectors: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares β (float64, CPU) with Σ_k β_k v_k ≈ target, for vectors [K, n].

    LAPACK's least squares on the [n, K] matrix splits its work by the thread count, which changes
    the last bits of β with mergekit's -j; it runs on one thread here.  The SVD driver (gelsd):
    torch's default on CPU (gelsy) misjudges the rank of stacks with two identical task vectors
    and returns a β that does not rebuild δ.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        solution = torch.linalg.lstsq(vectors.T.double().cpu(), target.double().cpu()[:, None], driver="gelsd")
    finally:
        torch.set_num_threads(threads)
    return solution.solution.flatten().cpu()
