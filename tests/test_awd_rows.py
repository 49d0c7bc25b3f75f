"""Row-wise AWD (core.awd_rows, issue #14): the reduced batched solve equals the full-size solve, δ[r]
stays in span{τ_i[r]}, the objective is the authors', and degenerate rows give no NaN."""

from __future__ import annotations

import pytest
import torch

from mergekit_awd.core.awd import SolverSettings
from mergekit_awd.core.awd_rows import row_grams, row_loss_and_grad, solve_rows, solve_rows_direct


def family(k: int = 4, rows: int = 7, cols: int = 24, seed: int = 0) -> torch.Tensor:
    """[K, R, C] float64 task vectors with a shared component, a zero row in one task vector, two
    identical task-vector rows, and one row where all task vectors are zero."""
    g = torch.Generator().manual_seed(seed)
    shared = torch.randn(rows, cols, generator=g, dtype=torch.float64)
    tau = 0.6 * shared + torch.randn(k, rows, cols, generator=g, dtype=torch.float64)
    tau = tau * torch.logspace(-3, 1, rows, dtype=torch.float64)[None, :, None]  # rows of very different scale
    if k >= 2:
        tau[1, 2] = 0.0
    if k >= 4:
        tau[3, 4] = tau[2, 4]
    tau[:, 5] = 0.0
    return tau


def delta_of(tau: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    return torch.einsum("rk,krc->rc", beta, tau)


SETTINGS = [
    SolverSettings(optimizer="gd", lr=0.05, steps=60, alpha=0.03),
    SolverSettings(optimizer="sgd", lr=0.02, steps=60, alpha=0.03, momentum=0.9, weight_decay=1e-4),
    SolverSettings(optimizer="sgd", lr=1e-3, steps=40, alpha=1e-3, momentum=0.9, weight_decay=1e-4, units="absolute"),
    SolverSettings(optimizer="gd", lr=1e-3, steps=40, alpha=0.0, units="absolute"),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=[f"{s.optimizer}-{s.units}" for s in SETTINGS])
def test_reduced_equals_direct(settings):
    tau = family()
    reduced = delta_of(tau, solve_rows(row_grams(tau), settings).coefficients)
    direct = solve_rows_direct(tau, settings)
    assert float(direct.abs().max()) > 0
    assert torch.allclose(reduced, direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))


def test_each_row_of_delta_lies_in_the_span_of_the_task_vector_rows():
    tau = family()
    settings = SETTINGS[1]
    direct = solve_rows_direct(tau, settings)
    for r in range(tau.shape[1]):
        basis = tau[:, r].T  # [C, K]
        if float(basis.abs().max()) == 0:
            assert float(direct[r].abs().max()) == 0
            continue
        solution = torch.linalg.lstsq(basis, direct[r][:, None], driver="gelsd").solution
        residual = basis @ solution - direct[r][:, None]
        assert float(residual.norm()) <= 1e-9 * max(float(direct[r].norm()), 1e-300)


def authors_objective(tau: torch.Tensor, delta: torch.Tensor, l1_coef: float) -> float:
    """nathanielyvo/WUDI-Merging decompose.py, split='row', re-implemented: tril |cos| mean over
    rows and pairs, plus l1_coef Σ_r ‖δ[r]‖ (their ε = 1e-8 on the norms)."""
    sv = (tau - delta[None]).permute(1, 0, 2)
    sv_norm = sv / (torch.norm(sv, dim=2, keepdim=True) + 1e-8)
    cos = sv_norm @ sv_norm.transpose(1, 2)
    mask = torch.tril(torch.ones_like(cos[0]), diagonal=-1)
    cos_loss = torch.sum(torch.abs(cos * mask)) / (torch.sum(mask) * cos.shape[0])
    return float(cos_loss + l1_coef * torch.sum(torch.norm(delta, dim=1)))


def test_absolute_units_are_the_authors_objective():
    g = torch.Generator().manual_seed(3)
    tau = torch.randn(4, 5, 16, generator=g, dtype=torch.float64)
    delta = 0.3 * torch.randn(5, 16, generator=g, dtype=torch.float64)
    k, rows = tau.shape[:2]
    active = torch.ones(rows, k, dtype=torch.bool)
    loss, _ = row_loss_and_grad(tau.permute(1, 0, 2), delta, 0.01, 1.0 / (rows * k * (k - 1)), active)
    assert float(loss.sum()) == pytest.approx(authors_objective(tau, delta, 0.01), rel=1e-7)


def test_relative_units_do_not_depend_on_a_row_scale():
    tau = family(seed=1)
    settings = SETTINGS[0]
    scaled = tau.clone()
    scaled[:, 0] *= 1e4
    a = solve_rows(row_grams(tau), settings).coefficients
    b = solve_rows(row_grams(scaled), settings).coefficients
    assert torch.allclose(a, b, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_degenerate_rows_give_no_nan(k):
    tau = family(k=4, seed=2)[:k]
    for settings in SETTINGS[:2]:
        result = solve_rows(row_grams(tau), settings)
        assert torch.isfinite(result.coefficients).all()
        assert all(v == v for v in result.summary().values() if isinstance(v, float))
        if k == 1:
            assert float(result.coefficients.abs().max()) == 0 and result.solved_rows == 0
        # the all-zero row gets no δ, and a zero row of one task vector is left out of its row's δ
        assert float(result.coefficients[5].abs().max()) == 0
        if k >= 2:
            assert float(result.coefficients[2, 1]) == 0


def test_identical_task_vectors_give_a_finite_delta():
    tau = family(k=2, seed=4)
    tau[1] = tau[0]
    result = solve_rows(row_grams(tau), SETTINGS[1])
    assert torch.isfinite(result.coefficients).all()
    assert torch.isfinite(delta_of(tau, result.coefficients)).all()


def test_row_scope_through_the_cli_reduced_equals_direct_and_reports_rows(tiny_family, tmp_path):
    import json

    import yaml

    from conftest import load_state
    from mergekit_awd.cli import run
    from mergekit_awd.testing.synthetic import TINY, merge_config

    parameters = {"scope": "row", "optimizer": "sgd", "lr": 0.02, "steps": 30, "momentum": 0.9, "weight_decay": 1e-4}
    outs = {}
    for solver in ("reduced", "direct"):
        config = tmp_path / f"{solver}.yml"
        config.write_text(yaml.safe_dump(merge_config("awd", tiny_family, {**parameters, "solver": solver}, "float32")))
        assert run([str(config), str(tmp_path / solver), "--no-copy-tokenizer", "--quiet"]) == 0
        outs[solver] = load_state(tmp_path / solver)
    base = load_state(tiny_family[0])
    changed = 0
    for name, tensor in outs["reduced"].items():
        assert torch.allclose(tensor, outs["direct"][name], rtol=1e-5, atol=1e-6), name
        changed += int(not torch.equal(tensor, base[name]))
    assert changed > 0
    report = json.loads((tmp_path / "reduced" / "awd_report.json").read_text())
    entry = report["scopes"]["model.layers.0.mlp.down_proj.weight"]
    assert entry["rows"] == TINY.hidden_size and entry["solved_rows"] == TINY.hidden_size
    assert entry["mean_abs_cos_after"] < entry["mean_abs_cos_before"]
    assert report["summary"]["disentangled_tensors"] == 7 * TINY.num_hidden_layers


def test_direct_row_solver_refuses_adam_before_merging():
    from mergekit_awd.core.awd import AWDParameters
    from mergekit_awd.errors import InvalidSettingError

    with pytest.raises(InvalidSettingError, match="solver: direct with scope: row"):
        AWDParameters(scope="row", solver="direct")
