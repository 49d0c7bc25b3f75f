"""``ace`` (ACE-Merging, arXiv 2603.02945): golden values against an independent transcription of
the reference ``MergeStrategy.ace_merging`` (unravel-xu/ACE-Merging, src/merge/strategy.py) on
plain tensors, its degenerate cases, and the method end to end through the CLI on the tiny family."""

from __future__ import annotations

import contextlib
import json
import warnings

import pytest
import torch
import yaml

from conftest import load_state
from merge_helpers import merge_cli
from mergekit_awd.core.ace import AceParameters, ace_merge_matrices, heterogeneity
from mergekit_awd.testing.synthetic import merge_config

RTOL = 1e-5


# --------------------------------------------------------------------------- the reference, transcribed


@contextlib.contextmanager
def default_float64():
    """The reference allocates with torch's default dtype; run it in float64 (the golden values' dtype)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.var of one value (T = 1) warns and returns NaN
            yield
    finally:
        torch.set_default_dtype(previous)


def reference_ace(task_vectors, eps=1e-2, k_frac=0.3, layer="layers.0.mlp.weight", device="cpu",
                  uncentred_b=False, matrix_prior=False, skip_empty_correction=False):
    """``ace_merging`` for one layer, line by line.  Not in the reference: ``uncentred_b`` and
    ``matrix_prior`` (this package's ``b_update: uncentred`` and ``prior: mean_covariance``), and
    ``skip_empty_correction`` (no correction when k = 0, where the reference returns NaN)."""
    with default_float64(), torch.no_grad():
        is_1d_layer = any(vec.ndim != 2 or "text_projection" in layer for vec in task_vectors)
        if is_1d_layer:
            return torch.mean(torch.stack(task_vectors), dim=0)
        T = len(task_vectors)
        _, in_dim = task_vectors[0].shape
        traces = torch.tensor([torch.trace(W_t.T @ W_t).item() for W_t in task_vectors])
        log_traces = torch.log(traces + 1e-12)
        gamma = torch.var(log_traces) / (torch.mean(log_traces).pow(2) + 1e-12)
        flag = gamma > 0.3
        avg_trace = traces.mean().item()
        Sigmas = []
        WSigma_sum = torch.zeros_like(task_vectors[0], device=device)
        Sigma_sum = torch.zeros((in_dim, in_dim), device=device)
        for W_t in task_vectors:
            W_raw = W_t
            W_t = W_t - W_t.mean(dim=0, keepdim=True)
            Sigma_raw = W_t.T @ W_t
            tr = torch.trace(Sigma_raw) + 1e-12
            if flag:
                Sigma_t = Sigma_raw / tr
                eps_t = eps / tr
            else:
                Sigma_t = Sigma_raw
                eps_t = eps
            Sigmas.append(Sigma_t)
            Sigma_t = Sigma_t + eps_t * torch.eye(in_dim, device=device)
            WSigma_sum += (W_raw if uncentred_b else W_t) @ Sigma_t
            Sigma_sum += Sigma_t
        C_agg = torch.mean(sum(Sigmas), dim=0, keepdim=True)
        if flag:
            C_agg = C_agg / (avg_trace + 1e-12)
        if matrix_prior:
            C_agg = sum(Sigmas) / T
        A = Sigma_sum + C_agg
        B = WSigma_sum
        try:
            A_inv = torch.linalg.inv(A)
        except RuntimeError:
            A_inv = torch.linalg.pinv(A)
        W_0 = B @ A_inv
        merging_vector = W_0
        if flag and not (skip_empty_correction and int(min(B.shape) * k_frac) == 0):
            Sigma_mean = Sigma_sum / T
            Delta_Res = torch.zeros_like(task_vectors[0], device=device)
            for W_t, S_t in zip(task_vectors, Sigmas):
                Delta_Res += W_t @ (S_t - Sigma_mean)
            Delta_Fused = Delta_Res + W_0
            U, S, Vh = torch.linalg.svd(Delta_Fused, full_matrices=False)
            r = S.numel()
            k = int(r * k_frac)
            S_fused_k = S[:k]
            sigma_iso = S_fused_k.mean()
            U_k = U[:, :k]
            V_k = Vh[:k, :].T
            merging_vector += sigma_iso * (U_k @ V_k.T)
        return merging_vector


def reference_flag(task_vectors) -> bool:
    with default_float64():
        traces = torch.tensor([torch.trace(W_t.T @ W_t).item() for W_t in task_vectors])
        log_traces = torch.log(traces + 1e-12)
        return bool(torch.var(log_traces) / (torch.mean(log_traces).pow(2) + 1e-12) > 0.3)


def tasks(k=3, m=24, n=16, seed=0, scales=(0.1, 0.1, 0.1)):
    """[k, m, n] float64 task vectors sharing a component, task t scaled by ``scales[t]``."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(m, n, generator=g, dtype=torch.float64)
    noise = torch.randn(k, m, n, generator=g, dtype=torch.float64)
    scale = torch.tensor(scales[:k], dtype=torch.float64)[:, None, None]
    return scale * (0.5 * shared + noise)


HETEROGENEOUS = (0.05, 0.3, 2.0)


def assert_relative(ours, reference, rtol=RTOL):
    assert torch.isfinite(ours).all()
    error = float((ours - reference).norm()) / max(float(reference.norm()), 1e-300)
    assert error <= rtol, error


# --------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("shape", [(24, 16), (16, 24), (20, 20)])
@pytest.mark.parametrize("scales", [(0.1, 0.1, 0.1), HETEROGENEOUS], ids=["homogeneous", "heterogeneous"])
def test_ace_matches_the_reference(shape, scales):
    tvs = tasks(m=shape[0], n=shape[1], scales=scales)
    result = ace_merge_matrices(tvs)
    assert result.heterogeneous == reference_flag(list(tvs)) == (scales == HETEROGENEOUS)
    assert result.solve == "lu" and result.relative_residual < 1e-10
    assert (result.spectral_rank > 0) == result.heterogeneous
    assert_relative(result.delta, reference_ace(list(tvs)))


# float32 error ≈ cond(A) × 6e-8: m > n gives full-rank covariances; n > m leaves n − 3m directions of A
# at the ridge ε alone (cond(A) ~ 3e4 here, a relative error of 4e-3 measured, bf16's own resolution)
@pytest.mark.parametrize("shape,rtol", [((24, 16), 1e-5), ((64, 256), 1e-2)])
@pytest.mark.parametrize("scales", [(0.1, 0.1, 0.1), HETEROGENEOUS], ids=["homogeneous", "heterogeneous"])
def test_float32_inputs_are_solved_in_float32_close_to_the_float64_reference(shape, rtol, scales):
    tvs = tasks(m=shape[0], n=shape[1], scales=scales)
    result = ace_merge_matrices(tvs.float())
    assert result.delta.dtype == torch.float32 and result.heterogeneous == reference_flag(list(tvs))
    assert_relative(result.delta.double(), reference_ace(list(tvs)), rtol=rtol)


@pytest.mark.parametrize("scales", [(0.1, 0.1, 0.1), HETEROGENEOUS], ids=["homogeneous", "heterogeneous"])
@pytest.mark.parametrize("option", ["uncentred_b", "matrix_prior"])
def test_the_options_change_only_their_step(scales, option):
    tvs = tasks(scales=scales)
    settings = AceParameters(**({"b_update": "uncentred"} if option == "uncentred_b" else {"prior": "mean_covariance"}))
    ours = ace_merge_matrices(tvs, parameters=settings).delta
    assert_relative(ours, reference_ace(list(tvs), **{option: True}))
    assert float((ours - ace_merge_matrices(tvs).delta).norm()) > 1e-6 * float(ours.norm())


def test_eps_and_k_frac_reach_the_solve():
    tvs = tasks(scales=HETEROGENEOUS)
    ours = ace_merge_matrices(tvs, parameters=AceParameters(eps=0.5, k_frac=0.5))
    assert ours.spectral_rank == 8
    assert_relative(ours.delta, reference_ace(list(tvs), eps=0.5, k_frac=0.5))


def test_one_task_runs_the_homogeneous_branch_as_the_reference():
    tvs = tasks(k=1)
    result = ace_merge_matrices(tvs)
    assert not result.heterogeneous and result.heterogeneity is None
    assert_relative(result.delta, reference_ace(list(tvs)))


def test_identical_task_vectors_are_homogeneous_and_match():
    tvs = tasks(k=1, scales=(0.3,)).repeat(3, 1, 1)
    result = ace_merge_matrices(tvs)
    assert not result.heterogeneous and result.heterogeneity == 0.0
    assert_relative(result.delta, reference_ace(list(tvs)))


def test_zero_task_vectors():
    tvs = tasks(scales=HETEROGENEOUS)
    zeros = torch.zeros_like(tvs)
    assert torch.equal(ace_merge_matrices(zeros).delta, torch.zeros(tvs.shape[1:], dtype=torch.float64))
    assert torch.equal(reference_ace(list(zeros)), torch.zeros(tvs.shape[1:], dtype=torch.float64))
    # one zero task vector is left out (in the reference its ε / 1e-12 ridge blows up Δ_Res)
    with_zero = torch.cat([tvs, zeros[:1]])
    result = ace_merge_matrices(with_zero)
    assert result.tasks == 3
    torch.testing.assert_close(result.delta, ace_merge_matrices(tvs).delta)
    assert float(reference_ace(list(with_zero)).norm()) > 1e6 * float(result.delta.norm())


def test_a_singular_a_falls_back_to_the_pseudo_inverse_as_the_reference():
    """ε = 0 and an input column no task touches: A has a zero column, LU (and ``inv``) fail."""
    tvs = tasks()
    tvs[:, :, 3] = 0
    result = ace_merge_matrices(tvs, parameters=AceParameters(eps=0.0))
    assert result.solve == "pinv" and result.fallback and result.summary()["pinv_fallback"] is True
    assert_relative(result.delta, reference_ace(list(tvs), eps=0.0))


def test_no_spectral_direction_gives_no_correction_where_the_reference_gives_nan():
    tvs = tasks(m=3, n=16, scales=HETEROGENEOUS)  # k = int(3 · 0.3) = 0
    result = ace_merge_matrices(tvs)
    assert result.heterogeneous and result.spectral_rank == 0 and result.sigma_iso is None
    assert torch.isnan(reference_ace(list(tvs))).all()
    assert_relative(result.delta, reference_ace(list(tvs), skip_empty_correction=True))


def test_weights_scale_the_task_vectors_first():
    tvs = tasks(scales=HETEROGENEOUS)
    w = [2.0, 1.0, 0.5]
    scaled = tvs * torch.tensor(w, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(ace_merge_matrices(tvs, w).delta, ace_merge_matrices(scaled).delta)


def test_heterogeneity_is_the_references_gamma():
    tvs = tasks(scales=HETEROGENEOUS)
    gamma, traces = heterogeneity(tvs)
    logs = torch.log(torch.stack([torch.trace(t.T @ t) for t in tvs]) + 1e-12)
    assert gamma == pytest.approx(float(logs.var() / logs.mean() ** 2), rel=1e-9) and gamma > 0.3
    assert heterogeneity(tvs[:1])[0] is None


@pytest.mark.parametrize("scales", [(0.1, 0.1, 0.1), HETEROGENEOUS], ids=["homogeneous", "heterogeneous"])
def test_deterministic_and_in_the_working_dtype(scales):
    tvs = tasks(scales=scales).float()
    first, second = ace_merge_matrices(tvs), ace_merge_matrices(tvs.clone())
    assert first.delta.dtype == torch.float32 and torch.equal(first.delta, second.delta)
    assert first.summary() == second.summary()
    json.dumps(first.summary())


def test_settings_are_validated():
    for bad in ({"eps": -1.0}, {"k_frac": 1.5}, {"gamma_threshold": -0.1}, {"b_update": "raw"}, {"prior": "x"}):
        with pytest.raises(ValueError):
            AceParameters(**bad)


# --------------------------------------------------------------------------- end to end


def test_cli_merge_is_base_plus_lambda_times_the_merged_update(tmp_path, tiny_family):
    lam = 0.7
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("ace", tiny_family, {"lambda": lam}, "float32")))
    out = merge_cli(tmp_path, config, "out")
    report = json.loads((out / "ace_report.json").read_text())
    assert report["method"] == "ace" and report["ace"] and report["averaged"]
    merged, states = load_state(out), [load_state(p) for p in tiny_family]
    base = states[0]
    for name, entry in report["ace"].items():
        taus = torch.stack([s[name] - base[name] for s in states[1:]])
        result = ace_merge_matrices(taus)
        assert entry == json.loads(json.dumps(result.summary()))
        torch.testing.assert_close(merged[name], base[name] + lam * result.delta, atol=1e-6, rtol=1e-5)
    for name in report["averaged"]:  # non-matrix tensors: base + λ · mean task vector
        taus = torch.stack([s[name] - base[name] for s in states[1:]])
        torch.testing.assert_close(merged[name], base[name] + lam * taus.mean(0), atol=1e-6, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert "ace merge details" in card and "### ACE solve" in card


def test_cli_merge_is_deterministic(tmp_path, tiny_family):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("ace", tiny_family, {"select": "matrices"}, "float32")))
    first, second = load_state(merge_cli(tmp_path, config, "a")), load_state(merge_cli(tmp_path, config, "b"))
    assert set(first) == set(second) and all(torch.equal(first[n], second[n]) for n in first)


def test_awd_with_combine_ace_runs(tmp_path, tiny_family):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("awd", tiny_family, {"combine": "ace", "steps": 5}, "float32")))
    out = merge_cli(tmp_path, config, "out")
    report = json.loads((out / "awd_report.json").read_text())
    assert report["summary"]["combined_by"] == ["ace"] and report["summary"]["disentangled_tensors"] > 0
    merged = load_state(out)
    assert all(torch.isfinite(t).all() for t in merged.values())
