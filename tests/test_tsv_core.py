"""TSV core (``mergekit_awd.core.tsv``) on plain tensors."""

import math

import pytest
import torch

from mergekit_awd.core.awd import SolverSettings
from mergekit_awd.core.awd_delta import remove_redundant_vector
from mergekit_awd.core.task_vectors import mean_task_vector
from mergekit_awd.core.tsv import (
    TSVSettings,
    _stack,
    kept_rank,
    singular_task_interference,
    task_singular_triplets,
    top_singular_triplets,
    tsv_merge_matrices,
)
from mergekit_awd.core.whitening import polar_factor, whiten

EXACT = TSVSettings(svd="exact")
LOWRANK = TSVSettings(svd="lowrank", oversample=4, power_iters=2)


def orthogonal_supports(rows=40, cols=30, tasks=3, rank=3, seed=0, dtype=torch.float64):
    """K task matrices with disjoint blocks of one orthonormal basis on each side."""
    g = torch.Generator().manual_seed(seed)
    u = torch.linalg.qr(torch.randn(rows, tasks * rank, generator=g, dtype=dtype)).Q
    v = torch.linalg.qr(torch.randn(cols, tasks * rank, generator=g, dtype=dtype)).Q
    mats = []
    for i in range(tasks):
        s = 1 + 2 * torch.rand(rank, generator=g, dtype=dtype)
        block = slice(i * rank, (i + 1) * rank)
        mats.append((u[:, block] * s) @ v[:, block].T)
    return torch.stack(mats)


def gaussian_tasks(rows=48, cols=36, tasks=3, seed=0, shared=0.6, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(rows, cols, generator=g)
    return torch.stack([shared * common + torch.randn(rows, cols, generator=g) for _ in range(tasks)]).to(dtype)


def decaying_tasks(rows=64, cols=48, tasks=3, decay=4.0, seed=0):
    """Task matrices with a fast-decaying spectrum σ_j = exp(−j/decay) (like real fine-tunes)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(tasks):
        u = torch.linalg.qr(torch.randn(rows, cols, generator=g)).Q
        v = torch.linalg.qr(torch.randn(cols, cols, generator=g)).Q
        out.append((u * torch.exp(-torch.arange(cols) / decay)) @ v.T)
    return torch.stack(out)


@pytest.mark.parametrize("settings", [EXACT, LOWRANK], ids=["exact", "lowrank"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_orthogonal_low_rank_supports_merge_to_their_sum(settings, dtype):
    tasks = orthogonal_supports(dtype=dtype)
    result = tsv_merge_matrices(tasks, settings=settings)
    assert result.kept_rank == 10 and result.kept == [3, 3, 3]
    torch.testing.assert_close(result.delta, tasks.sum(0), atol=1e-5, rtol=0)
    assert result.interference == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("method", ["exact", "lowrank"])
@pytest.mark.parametrize("shape", [(48, 36), (36, 48), (30, 30)])
def test_whitened_factors_are_orthogonal(method, shape):
    tasks = gaussian_tasks(*shape)
    triplets, k = task_singular_triplets(tasks, None, TSVSettings(svd=method))
    u, s, vh = _stack(triplets)
    assert u.shape[1] == 3 * k == 3 * (min(shape) // 3)
    u_perp, vh_perp = whiten(u, vh, method)
    eye = torch.eye(u.shape[1])
    torch.testing.assert_close(u_perp.T @ u_perp, eye, atol=1e-5, rtol=0)
    torch.testing.assert_close(vh_perp @ vh_perp.T, eye, atol=1e-5, rtol=0)
    # the nearest orthogonal matrix: closer to U than U's own Gram–Schmidt factor
    q = torch.linalg.qr(u).Q
    q = q * torch.sign((q * u).sum(0))
    assert (u_perp - u).norm() <= (q - u).norm() + 1e-6


def test_exact_and_gram_whitening_agree():
    tasks = gaussian_tasks(40, 32, dtype=torch.float64)
    triplets, _ = task_singular_triplets(tasks, None, EXACT)
    u, _, vh = _stack(triplets)
    for a, b in zip(whiten(u, vh, "exact"), whiten(u, vh, "lowrank")):
        torch.testing.assert_close(a, b, atol=1e-8, rtol=0)


@pytest.mark.parametrize("method", ["exact", "lowrank"])
def test_identical_tasks_are_not_counted_twice(method):
    task = gaussian_tasks(24, 16, tasks=1, dtype=torch.float64)[0]
    result = tsv_merge_matrices(torch.stack([task, task]), settings=TSVSettings(svd=method, oversample=16))
    assert result.kept_rank == 8
    top = top_singular_triplets(task, 8, EXACT).matrix()
    torch.testing.assert_close(result.delta, top, atol=1e-8, rtol=0)


def test_polar_factor_of_wide_matrix_has_orthonormal_rows():
    x = torch.randn(3, 7, dtype=torch.float64)
    p = polar_factor(x)
    torch.testing.assert_close(p @ p.T, torch.eye(3, dtype=torch.float64))


def test_kept_rank_defaults():
    assert kept_rank(768, 2048, 3) == 256
    assert kept_rank(2048, 768, 3) == 256
    assert kept_rank(64, 64, 3) == 21
    assert kept_rank(64, 64, 1) == 64
    assert kept_rank(64, 64, 3, fraction=0.5) == 10
    assert kept_rank(768, 768, 3, fraction=1 / 3) == 85
    assert kept_rank(300, 3 * 256, 3, fraction=1.0) == 100
    assert kept_rank(4, 10, 8) == 1  # more tasks than the rank: one triplet each
    assert kept_rank(4, 10, 0) == 0


def test_merge_uses_documented_default_rank_and_fraction():
    tasks = gaussian_tasks(48, 36)
    assert tsv_merge_matrices(tasks).kept_rank == 12
    assert tsv_merge_matrices(tasks, settings=TSVSettings(fraction=0.5)).kept_rank == 6
    assert tsv_merge_matrices(tasks[:2]).kept_rank == 18


def test_single_task_full_rank_returns_the_task_matrix():
    task = gaussian_tasks(20, 12, tasks=1, dtype=torch.float64)
    result = tsv_merge_matrices(task)
    assert result.kept_rank == 12 and result.interference == 0.0
    torch.testing.assert_close(result.delta, task[0], atol=1e-10, rtol=0)


def test_zero_task_matrices_give_zeros_and_are_left_out():
    zeros = torch.zeros(3, 16, 12)
    result = tsv_merge_matrices(zeros)
    assert torch.equal(result.delta, torch.zeros(16, 12))
    assert result.tasks == 0 and result.interference == 0.0
    assert singular_task_interference(list(zeros)) == 0.0
    tasks = gaussian_tasks(16, 12, tasks=2, dtype=torch.float64)
    with_zero = torch.stack([tasks[0], torch.zeros(16, 12, dtype=torch.float64), tasks[1]])
    a, b = tsv_merge_matrices(with_zero), tsv_merge_matrices(tasks)
    assert a.tasks == 2 and a.kept_rank == 6 and a.kept == [6, 0, 6]
    assert torch.isfinite(a.delta).all()
    torch.testing.assert_close(a.delta, b.delta)
    # weight 0 makes a zero task matrix too
    c = tsv_merge_matrices(torch.stack([tasks[0], tasks[0] * 3, tasks[1]]), weights=[1.0, 0.0, 1.0])
    torch.testing.assert_close(c.delta, b.delta)


def test_weights_scale_task_matrices_before_the_svd():
    tasks = gaussian_tasks(24, 18, dtype=torch.float64)
    weighted = tsv_merge_matrices(tasks, weights=[2.0, 1.0, -0.5])
    manual = tsv_merge_matrices(tasks * torch.tensor([2.0, 1.0, -0.5], dtype=torch.float64)[:, None, None])
    torch.testing.assert_close(weighted.delta, manual.delta)
    doubled = tsv_merge_matrices(tasks, weights=[2.0, 2.0, 2.0])
    torch.testing.assert_close(doubled.delta, 2 * tsv_merge_matrices(tasks).delta)


def test_numerically_zero_singular_values_are_dropped():
    low = orthogonal_supports(rows=20, cols=16, tasks=1, rank=2)[0]
    triplets = top_singular_triplets(low, 8, EXACT)
    assert triplets.rank == 2 and triplets.energy_kept == pytest.approx(1.0)
    torch.testing.assert_close(triplets.matrix(), low)


def test_lowrank_matches_exact_on_decaying_spectra_and_is_deterministic():
    tasks = decaying_tasks()
    exact = tsv_merge_matrices(tasks, settings=EXACT)
    fast = tsv_merge_matrices(tasks, settings=TSVSettings(svd="lowrank", oversample=8, power_iters=2))
    again = tsv_merge_matrices(tasks, settings=TSVSettings(svd="lowrank", oversample=8, power_iters=2))
    assert float((fast.delta - exact.delta).norm() / exact.delta.norm()) < 1e-3
    assert torch.equal(fast.delta, again.delta)
    assert fast.interference == pytest.approx(exact.interference, rel=1e-3)


def test_randomized_path_falls_back_to_exact_when_the_sketch_covers_the_rank():
    task = gaussian_tasks(10, 8, tasks=1, dtype=torch.float64)[0]
    fast = top_singular_triplets(task, 6, TSVSettings(svd="lowrank", oversample=4))
    exact = top_singular_triplets(task, 6, EXACT)
    torch.testing.assert_close(fast.matrix(), exact.matrix())


def test_sti_matches_the_definition():
    tasks = gaussian_tasks(12, 9, dtype=torch.float64)
    k = 2
    us, ss, vs = [], [], []
    for t in tasks:
        u, s, vh = torch.linalg.svd(t, full_matrices=False)
        us.append(u[:, :k]), ss.append(s[:k]), vs.append(vh[:k].T)
    u, s, v = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    eye = torch.eye(3 * k, dtype=torch.float64)
    expected = float(((u.T @ u - eye) @ torch.diag(s) @ (v.T @ v - eye)).abs().sum())
    assert singular_task_interference(list(tasks), k=k) == pytest.approx(expected, rel=1e-10)
    # default k = floor(r / K) = 3
    assert singular_task_interference(list(tasks)) == pytest.approx(
        singular_task_interference(list(tasks), k=3), rel=1e-12)


def test_sti_properties():
    tasks = gaussian_tasks(16, 12, dtype=torch.float64)
    sti = singular_task_interference(list(tasks))
    assert sti > 0
    assert singular_task_interference(list(tasks.flip(0))) == pytest.approx(sti, rel=1e-9)
    assert singular_task_interference(list(3 * tasks)) == pytest.approx(3 * sti, rel=1e-9)
    assert singular_task_interference([tasks[0]]) == pytest.approx(0.0, abs=1e-9)
    assert singular_task_interference(list(orthogonal_supports())) == pytest.approx(0.0, abs=1e-9)
    shared = torch.stack([tasks[0], tasks[0] + 0.1 * tasks[1]])
    assert singular_task_interference(list(shared)) > singular_task_interference(list(tasks[:2]))
    assert math.isfinite(singular_task_interference(list(tasks.float())))


def test_bfloat16_inputs_are_solved_in_float32():
    tasks = gaussian_tasks(16, 12).to(torch.bfloat16)
    result = tsv_merge_matrices(tasks)
    assert result.delta.dtype == torch.float32
    reference = tsv_merge_matrices(tasks.float())
    torch.testing.assert_close(result.delta, reference.delta)


def test_mean_task_vector():
    stack = torch.arange(12.0).reshape(3, 4)
    torch.testing.assert_close(mean_task_vector(stack), stack.mean(0))
    torch.testing.assert_close(mean_task_vector(stack, [1.0, 0.0, 2.0]), (stack[0] + 2 * stack[2]) / 3)
    with pytest.raises(ValueError, match="weights"):
        mean_task_vector(stack, [1.0, 2.0])


def test_remove_redundant_vector():
    tasks = gaussian_tasks(8, 6, dtype=torch.float64)
    with_zero = torch.cat([tasks, torch.zeros(1, 8, 6, dtype=torch.float64)])
    hat, result = remove_redundant_vector(with_zero, SolverSettings(steps=50))
    assert torch.equal(hat[3], torch.zeros(8, 6, dtype=torch.float64))
    delta = with_zero[0] - hat[0]
    torch.testing.assert_close(with_zero[1] - hat[1], delta)
    assert result["mean_abs_cos_after"] < result["mean_abs_cos_before"]
    single, solo = remove_redundant_vector(tasks[:1], SolverSettings())
    assert torch.equal(single, tasks[:1]) and solo["active"] == 1


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="task matrix 1 has shape"):
        tsv_merge_matrices([torch.zeros(4, 3), torch.zeros(3, 4)])
    with pytest.raises(ValueError, match="expected 2-D"):
        tsv_merge_matrices([torch.zeros(4)])
    with pytest.raises(ValueError, match="non-finite"):
        tsv_merge_matrices([torch.full((4, 3), float("nan"))])
    with pytest.raises(ValueError, match="at least one"):
        tsv_merge_matrices([])
    with pytest.raises(ValueError, match="weights"):
        tsv_merge_matrices(torch.ones(2, 3, 3), weights=[1.0])
    with pytest.raises(ValueError, match="fraction"):
        TSVSettings(fraction=1.5)
    with pytest.raises(ValueError, match="svd"):
        TSVSettings(svd="fast")
    with pytest.raises(ValueError, match="k must be"):
        singular_task_interference([torch.ones(3, 3)], k=0)


@pytest.mark.parametrize("settings", [EXACT, LOWRANK], ids=["exact", "lowrank"])
def test_task_parts_sum_to_the_merge_and_scale_with_positive_weights(settings):
    """Σ_i D_i = TSV-M, and TSV-M of w_i Δ_i = Σ_i w_i D_i for w_i > 0 (layer-wise tuning's parts)."""
    from mergekit_awd.core.tsv import tsv_task_parts

    g = torch.Generator().manual_seed(3)
    matrices = torch.randn(4, 24, 18, generator=g, dtype=torch.float64)
    parts = tsv_task_parts(matrices, settings)
    assert parts.shape == (4, 24, 18)
    torch.testing.assert_close(parts.sum(0), tsv_merge_matrices(matrices, None, settings).delta)
    weights = [0.2, 1.7, 0.05, 3.0]
    weighted = tsv_merge_matrices(matrices, weights, settings).delta
    torch.testing.assert_close(torch.tensordot(torch.tensor(weights, dtype=torch.float64), parts, dims=1), weighted,
                               rtol=1e-8, atol=1e-10)


def test_task_parts_of_a_zero_task_are_zero():
    from mergekit_awd.core.tsv import tsv_task_parts

    matrices = torch.randn(3, 12, 10, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    matrices[1] = 0
    parts = tsv_task_parts(matrices, EXACT)
    assert not parts[1].any()
    torch.testing.assert_close(parts.sum(0), tsv_merge_matrices(matrices, None, EXACT).delta)
