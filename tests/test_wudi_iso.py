"""``wudi``, ``iso_c`` and ``iso_cts`` (issue #15): golden values against independent
re-implementations of the references on plain tensors, the exact WUDI solver's optimality, and
each method end to end through the CLI on the tiny family."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from conftest import load_state
from merge_helpers import merge_cli
from mergekit_awd.core import wudi as wudi_module
from mergekit_awd.core.iso import common_rank, iso_c_matrices, iso_cts_matrices
from mergekit_awd.core.wudi import WudiParameters, normal_equations, wudi_loss, wudi_merge_matrices
from mergekit_awd.testing.synthetic import merge_config


def tasks(k=3, m=24, n=16, seed=0, scale=1e-3, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(m, n, generator=g, dtype=torch.float64)
    return (scale * (0.5 * shared + torch.randn(k, m, n, generator=g, dtype=torch.float64))).to(dtype)


# --------------------------------------------------------------------------- references, re-implemented


def reference_wudi(tvs: torch.Tensor, iter_num: int = 300) -> torch.Tensor:
    """FusionBench's ``wudi_merging`` for one 2-D key, written out independently."""
    new_vector = torch.nn.Parameter(torch.sum(tvs, dim=0))
    optimizer = torch.optim.Adam([new_vector], lr=1e-5, weight_decay=0)
    l2_norms = torch.square(torch.norm(tvs.reshape(tvs.shape[0], -1), p=2, dim=-1))
    for _ in range(iter_num):
        disturbing = new_vector.unsqueeze(0) - tvs
        product = torch.matmul(disturbing, tvs.transpose(1, 2))
        loss = torch.sum(torch.square(product) / l2_norms.unsqueeze(-1).unsqueeze(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return new_vector.detach()


def reference_iso_c(tvs: torch.Tensor) -> torch.Tensor:
    combined = sum(tvs)
    u, s, v = torch.linalg.svd(combined, full_matrices=False)
    return torch.linalg.multi_dot((u, torch.diag(torch.ones_like(s) * s.mean()), v))


def reference_iso_cts(tvs: torch.Tensor, fraction: float) -> torch.Tensor:
    shape, k = tvs.shape[1:], len(tvs)
    combined = sum(tvs)
    common = int(min(shape) * fraction)
    total = round((min(shape) - common) / k) * k
    common = min(shape) - total
    u, s, v = torch.linalg.svd(combined, full_matrices=False)
    cu, cs, cv = u[:, :common], s[:common], v[:common, :]
    per = int((min(shape) - common) / k)
    for i, w in enumerate(tvs):
        w_ts = w - cu @ cu.T @ w
        ut, st, vt = torch.linalg.svd(w_ts, full_matrices=False)
        if i == 0:
            bu, bs, bv = torch.zeros_like(ut), torch.zeros_like(st), torch.zeros_like(vt)
        bu[:, i * per:(i + 1) * per] = ut[:, :per]
        bs[i * per:(i + 1) * per] = st[:per]
        bv[i * per:(i + 1) * per, :] = vt[:per, :]
    bu[:, k * per:k * per + common] = cu
    bs[k * per:k * per + common] = cs
    bv[k * per:k * per + common, :] = cv
    a, _, b = torch.linalg.svd(bu, full_matrices=False)
    c, _, d = torch.linalg.svd(bv, full_matrices=False)
    bu, bv = a @ b, c @ d
    return torch.linalg.multi_dot((bu, torch.diag(torch.ones_like(bs) * bs.mean()), bv))


# --------------------------------------------------------------------------- golden values


@pytest.mark.parametrize("shape", [(24, 16), (16, 24), (6, 40)])  # (6, 40): n > 2 K m, A not used
def test_wudi_adam_matches_the_reference(shape):
    tvs = tasks(m=shape[0], n=shape[1])
    ours = wudi_merge_matrices(tvs, parameters=WudiParameters(solver="adam", steps=300, lr=1e-5)).delta
    reference = reference_wudi(tvs)
    assert float((ours - tvs.sum(0)).norm()) > 1e-4  # the 300 steps moved it
    torch.testing.assert_close(ours, reference, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("shape", [(24, 16), (16, 24), (20, 20)])
def test_iso_c_matches_the_reference(shape):
    tvs = tasks(m=shape[0], n=shape[1], dtype=torch.float64)
    torch.testing.assert_close(iso_c_matrices(tvs).delta, reference_iso_c(tvs), atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("shape,fraction", [((24, 16), 0.8), ((16, 24), 0.5), ((30, 30), 0.8), ((12, 40), 0.0)])
def test_iso_cts_matches_the_reference(shape, fraction):
    tvs = tasks(m=shape[0], n=shape[1], dtype=torch.float64)
    torch.testing.assert_close(iso_cts_matrices(tvs, common_space_fraction=fraction).delta,
                               reference_iso_cts(tvs, fraction), atol=1e-10, rtol=1e-8)


def test_common_rank_rounding_follows_the_reference():
    assert common_rank(16, 3, 0.8) == 13 and (16 - 13) % 3 == 0
    assert common_rank(384, 6, 0.8) == 306 and (384 - 306) % 6 == 0
    assert common_rank(10, 4, 0.0) == 2  # round(10 / 4) * 4 = 8 task directions


def test_weights_scale_the_task_vectors_first():
    tvs = tasks(dtype=torch.float64)
    w = [2.0, 1.0, 0.5]
    scaled = tvs * torch.tensor(w, dtype=torch.float64)[:, None, None]
    torch.testing.assert_close(iso_c_matrices(tvs, w).delta, iso_c_matrices(scaled).delta)
    torch.testing.assert_close(iso_cts_matrices(tvs, w).delta, iso_cts_matrices(scaled).delta)
    exact = WudiParameters(solver="exact")
    torch.testing.assert_close(wudi_merge_matrices(tvs, w, exact).delta, wudi_merge_matrices(scaled, None, exact).delta)


@pytest.mark.parametrize("merge", ["wudi_exact", "wudi_adam", "iso_c", "iso_cts"])
def test_a_zero_task_vector_is_left_out(merge):
    tvs = tasks(dtype=torch.float64)
    with_zero = torch.cat([tvs, torch.zeros(1, *tvs.shape[1:], dtype=torch.float64)])
    run = {"wudi_exact": lambda t: wudi_merge_matrices(t, parameters=WudiParameters(solver="exact")).delta,
           "wudi_adam": lambda t: wudi_merge_matrices(t, parameters=WudiParameters(steps=20)).delta,
           "iso_c": lambda t: iso_c_matrices(t).delta, "iso_cts": lambda t: iso_cts_matrices(t).delta}[merge]
    merged = run(with_zero)
    assert torch.isfinite(merged).all()
    torch.testing.assert_close(merged, run(tvs))
    assert torch.equal(run(torch.zeros_like(tvs)), torch.zeros(tvs.shape[1:], dtype=torch.float64))


# --------------------------------------------------------------------------- WUDI exact


@pytest.mark.parametrize("shape", [(24, 16), (8, 30)])
@pytest.mark.parametrize("path", ["direct", "conjugate gradients"])
def test_wudi_exact_solves_the_normal_equations_and_beats_adam(shape, path, monkeypatch):
    if path != "direct":
        monkeypatch.setattr(wudi_module, "DIRECT_MAX_COLUMNS", 4)
    tvs = tasks(m=shape[0], n=shape[1], dtype=torch.float64, scale=1.0)
    exact = wudi_merge_matrices(tvs, parameters=WudiParameters(solver="exact"))
    a, b = normal_equations(tvs, tvs.reshape(3, -1).pow(2).sum(1))
    norms = tvs.reshape(3, -1).pow(2).sum(1)
    residual = float((wudi_module.apply_normal_operator(exact.delta, tvs, norms) - b).norm() / b.norm())
    assert residual < 1e-6 and exact.residual < 1e-6
    adam = wudi_merge_matrices(tvs, parameters=WudiParameters(solver="adam", steps=300, lr=1e-2))
    assert exact.loss <= adam.loss + 1e-12 and exact.loss <= exact.initial_loss
    # the minimum-norm solution: no component outside the row space of the task vectors
    rows = torch.linalg.svd(tvs.reshape(-1, shape[1]), full_matrices=False)[2]
    outside = exact.delta - (exact.delta @ rows.T) @ rows
    assert float(outside.norm()) < 1e-8 * float(exact.delta.norm())


@pytest.mark.parametrize("shape", [(24, 16), (16, 24)])  # the n × n Gram form and the reference's m × m form
def test_wudi_loss_is_the_reference_loss(shape):
    tvs = tasks(m=shape[0], n=shape[1], dtype=torch.float64)
    merged = tvs.mean(0)
    norms = tvs.reshape(3, -1).pow(2).sum(1)
    expected = sum(float(((merged - t) @ t.T).pow(2).sum() / t.pow(2).sum()) for t in tvs)
    assert float(wudi_loss(merged, tvs, norms)) == pytest.approx(expected, rel=1e-12)


# --------------------------------------------------------------------------- end to end


METHOD_CASES = {
    "wudi_adam": ("wudi", {"steps": 5}, "wudi_report.json", "wudi"),
    "wudi_exact": ("wudi", {"solver": "exact", "select": "matrices"}, "wudi_report.json", "wudi"),
    "iso_c": ("iso_c", {"lambda": 0.8}, "iso_report.json", "isotropic"),
    "iso_cts": ("iso_cts", {"common_space_fraction": 0.5}, "iso_report.json", "isotropic"),
}


@pytest.mark.parametrize("case", sorted(METHOD_CASES))
def test_cli_merge_loads_with_transformers_and_reports(case, tmp_path, tiny_family):
    method, parameters, report_name, section = METHOD_CASES[case]
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config(method, tiny_family, parameters, "float32")))
    out = merge_cli(tmp_path, config, "out")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) > 0
    report = json.loads((out / report_name).read_text())
    assert report["method"] == method and report[section] and report["averaged"]
    merged, states = load_state(out), [load_state(p) for p in tiny_family]
    name = next(iter(report[section]))
    assert not torch.equal(merged[name], states[0][name])
    for averaged in report["averaged"]:  # non-matrix tensors: base + λ · mean task vector
        taus = torch.stack([s[averaged] - states[0][averaged] for s in states[1:]])
        lam = parameters.get("lambda", 1.0)
        torch.testing.assert_close(merged[averaged], states[0][averaged] + lam * taus.mean(0), atol=1e-6, rtol=1e-5)
    card = (out / "README.md").read_text()
    assert f"{method} merge details" in card


def test_wudi_exact_objective_is_no_higher_than_adam_on_every_tensor(tmp_path, tiny_family):
    losses = {}
    for solver in ("adam", "exact"):
        config = tmp_path / f"{solver}.yml"
        config.write_text(yaml.safe_dump(merge_config("wudi", tiny_family, {"solver": solver}, "float32")))
        out = merge_cli(tmp_path, config, solver)
        losses[solver] = json.loads((out / "wudi_report.json").read_text())["wudi"]
    assert set(losses["adam"]) == set(losses["exact"]) and losses["exact"]
    for name, entry in losses["exact"].items():
        assert entry["loss"] <= losses["adam"][name]["loss"] * (1 + 1e-6) + 1e-12, name
        assert entry["relative_residual"] < 1e-6, name


def test_svd_falls_back_to_float64_when_lapack_does_not_converge(monkeypatch):
    """LAPACK's divide and conquer can fail on ill-conditioned float32 matrices (it did on the speed
    benchmark's iso_cts residuals); ``stable_svd`` retries in float64."""
    from mergekit_awd.core.task_vectors import stable_svd

    real = torch.linalg.svd
    calls = []

    def flaky(matrix, *args, **kwargs):
        calls.append(matrix.dtype)
        if matrix.dtype == torch.float32:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real(matrix, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    tvs = tasks()
    merged = iso_cts_matrices(tvs).delta
    assert merged.dtype == torch.float32 and torch.isfinite(merged).all() and torch.float64 in calls
    u, s, vh = stable_svd(tvs[0])
    torch.testing.assert_close((u * s) @ vh, tvs[0], atol=1e-6, rtol=1e-4)
