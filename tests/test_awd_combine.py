"""``awd`` with ``combine: X``: δ removed, then mergekit's (or this package's) method X on θ_base + τ_i − δ.

Every expected value is computed here independently of the adapter's combine path: δ from the core
solver on the task vectors, the disentangled models built by hand, and X's own ``merge_group``.
"""

import json

import pytest
import torch
import yaml
from mergekit.merge_methods.base import TensorEntry, TensorGroup, TensorMetadata

from conftest import load_state
from merge_helpers import is_block_linear, merge_cli, write_config
from mergekit_awd.core.awd import AWDParameters, disentangled_task_vectors, solve_reduced
from mergekit_awd.mergekit_adapter.combine import combining_methods
from mergekit_awd.mergekit_adapter.registration import our_methods
from mergekit_awd.core.awd_rows import row_grams, solve_rows
from mergekit_awd.core.task_vectors import gram_matrix
from mergekit_awd.mergekit_adapter.registration import register_methods

register_methods()

NAME = "model.layers.0.mlp.down_proj.weight"
IDS = ("m0", "m1", "m2")


def _get(name):
    from mergekit.merge_methods import get

    return get(name)


def _group(base, models, name=NAME):
    entries = [TensorEntry("base", base, is_base=True)] + [TensorEntry(i, m) for i, m in zip(IDS, models)]
    return TensorGroup(entries, TensorMetadata(name=name))


def _family(seed=0, rows=12, cols=20, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(rows, cols, generator=g)
    shared = torch.randn(rows, cols, generator=g)
    models = [base + 0.1 * (shared + torch.randn(rows, cols, generator=g)) for _ in IDS]
    return base.to(dtype), [m.to(dtype) for m in models]


def _per_model(value):
    return {i: value for i in IDS}


def _awd_parameters(combine, **shared):
    """awd's bound parameters as mergekit passes them (per-model ones by id, left-out ones None)."""
    per_model = {"weight": _per_model(1.0), "density": _per_model(None), "gamma": _per_model(None),
                 "epsilon": _per_model(None)}
    for key in ("density", "gamma", "epsilon", "weight"):
        if key in shared:
            per_model[key] = _per_model(shared.pop(key))
    return {**per_model, "combine": combine, **shared}


def _mergekit_parameters(method, **given):
    """X's parameters at X's spec defaults, ``given`` overriding (per-model ones for every model)."""
    from mergekit.merge_methods.base import ParameterScope

    given = {"weight": 1.0, **given}
    out = {}
    for spec in _get(method).spec.parameters:
        if spec.scope == ParameterScope.SHARED:
            out[spec.name] = given.get(spec.name, spec.default)
        else:
            out[spec.name] = _per_model(given.get(spec.name, spec.default))
    return out


def _disentangled_models(base, models, settings):
    """θ_base + τ_i − δ in float32, δ from the core's tensor-scope solve."""
    work = base.float()
    taus = torch.stack([m.float() - work for m in models])
    result = solve_reduced(gram_matrix(taus), settings.solver_settings())
    delta = torch.tensordot(result.coefficients.to(torch.float32), taus, dims=1)
    return work, [work + (t - delta) for t in taus]


@pytest.mark.parametrize("method,extra", [
    ("ties", {"density": 0.5}),
    ("breadcrumbs_ties", {"density": 0.8, "gamma": 0.05}),
    ("della", {"density": 0.6, "epsilon": 0.1}),
])
def test_combine_equals_mergekit_method_on_disentangled_models(method, extra):
    base, models = _family()
    settings = AWDParameters(combine=method)
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters(method, **extra))
    work, disentangled = _disentangled_models(base, models, settings)
    torch.manual_seed(3)  # della is random: the same draw on both sides
    expected = _get(method).merge_group(_group(work, disentangled), **_mergekit_parameters(method, **extra))
    torch.manual_seed(3)
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters(method, **extra))
    assert torch.equal(merged, expected.to(base.dtype))
    plain = _get(method).merge_group(_group(base, models), **_mergekit_parameters(method, **extra))
    assert not torch.allclose(merged, plain)  # δ changed the merge


@pytest.mark.parametrize("solver", [None, "adam", "exact"])
def test_combine_solver_is_wudis_own_solver(solver):
    """``combine_solver`` reaches wudi as its ``solver`` (awd's own ``solver`` stays AWD's);
    left out, wudi's default (adam)."""
    base, models = _family(seed=5, rows=10, cols=14)
    shared = {} if solver is None else {"combine_solver": solver}
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters("wudi", **shared))
    work, disentangled = _disentangled_models(base, models, AWDParameters())
    expected = _get("wudi").merge_group(_group(work, disentangled),
                                        **_mergekit_parameters("wudi", solver=solver or "adam"))
    assert torch.equal(merged, expected.to(base.dtype))
    other = "exact" if (solver or "adam") == "adam" else "adam"
    assert not torch.equal(merged, _get("wudi").merge_group(_group(work, disentangled),
                                                            **_mergekit_parameters("wudi", solver=other)))


def test_combine_dare_ties_with_a_fixed_seed():
    base, models = _family(seed=1)
    work, disentangled = _disentangled_models(base, models, AWDParameters(combine="dare_ties"))
    torch.manual_seed(11)
    expected = _get("dare_ties").merge_group(_group(work, disentangled), **_mergekit_parameters("dare_ties", density=0.5))
    torch.manual_seed(11)
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters("dare_ties", density=0.5))
    assert torch.equal(merged, expected)


def test_combine_lambda_and_normalize_default_to_the_combining_method():
    base, models = _family(seed=2)
    # ties' defaults: λ 1, normalize true, density 1 (mergekit's)
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters("ties", density=0.5))
    work, disentangled = _disentangled_models(base, models, AWDParameters())
    expected = _get("ties").merge_group(_group(work, disentangled),
                                        **_mergekit_parameters("ties", density=0.5, normalize=True))
    assert torch.equal(merged, expected)
    scaled = _get("awd").merge_group(_group(base, models), **_awd_parameters("ties", density=0.5, **{"lambda": 0.5}))
    assert torch.allclose(scaled - base, 0.5 * (merged - base), atol=1e-6)


def test_combine_bfloat16_inputs_are_disentangled_in_float32():
    base, models = _family(seed=3, dtype=torch.bfloat16)
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters("ties", density=0.5))
    assert merged.dtype == torch.bfloat16
    work, disentangled = _disentangled_models(base, models, AWDParameters())
    expected = _get("ties").merge_group(_group(work, disentangled), **_mergekit_parameters("ties", density=0.5))
    assert torch.equal(merged, expected.to(torch.bfloat16))


def test_combine_tsv_equals_tsv_with_disentangle():
    """combine: tsv (scope tensor) is TSV's disentangle: true with the same solver settings."""
    base, models = _family(seed=4, rows=16, cols=16)
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters("tsv"))
    tsv = _get("tsv").merge_group(_group(base, models), weight=_per_model(1.0), disentangle=True)
    assert torch.allclose(merged, tsv, rtol=1e-5, atol=1e-5)
    plain = _get("tsv").merge_group(_group(base, models), weight=_per_model(1.0))
    assert not torch.allclose(merged, plain, atol=1e-5)


def test_combine_row_scope_uses_one_delta_per_row():
    base, models = _family(seed=5)
    settings = AWDParameters(scope="row", combine="ties")
    merged = _get("awd").merge_group(_group(base, models), **_awd_parameters("ties", scope="row", density=0.5))
    taus = torch.stack([m - base for m in models])
    result = solve_rows(row_grams(taus), settings.solver_settings())
    delta = torch.einsum("rk,krc->rc", result.coefficients.to(torch.float32), taus)
    disentangled = [base + t for t in disentangled_task_vectors(taus, delta, result.active)]
    expected = _get("ties").merge_group(_group(base, disentangled), **_mergekit_parameters("ties", density=0.5))
    assert torch.equal(merged, expected)


def test_disentangled_task_vectors_leave_zero_vectors_and_rows_alone():
    taus = torch.randn(3, 4, 5)
    taus[1] = 0
    delta = torch.randn(4, 5)
    out = disentangled_task_vectors(taus, delta, torch.tensor([True, False, True]))
    assert torch.equal(out[1], torch.zeros(4, 5)) and torch.allclose(out[0], taus[0] - delta)
    active = torch.ones(4, 3, dtype=torch.bool)
    active[2, 0] = False
    rows = disentangled_task_vectors(taus, delta, active)
    assert torch.allclose(rows[0, 2], taus[0, 2]) and torch.allclose(rows[2, 2], taus[2, 2] - delta[2])
    assert torch.equal(taus[1], torch.zeros(4, 5))  # not in place unless asked


@pytest.mark.parametrize("method", list(combining_methods(our_methods())[1:]))
def test_combine_degenerate_inputs_give_finite_merges(method):
    """K = 1, identical fine-tunes and all-zero task vectors: no NaN, whatever X."""
    base, models = _family(seed=6, rows=8, cols=8)
    for group in (_group(base, [models[0]]), _group(base, [models[0]] * 3), _group(base, [base.clone()] * 3)):
        ids = [e.id for e in group.non_base]
        parameters = _awd_parameters(method)
        parameters = {k: ({i: v[i] for i in ids} if isinstance(v, dict) else v) for k, v in parameters.items()}
        merged = _get("awd").merge_group(group, **parameters)
        assert bool(torch.isfinite(merged).all()), method


# --------------------------------------------------------------------------- through the CLI


def test_combine_ties_through_the_cli_equals_ties_on_disentangled_models(tiny_family, tmp_path):
    parameters = {"combine": "ties", "scope": "tensor"}
    config = write_config(tmp_path, tiny_family, parameters)
    data = yaml.safe_load(config.read_text())
    for entry in data["models"]:
        entry["parameters"] = {"density": 0.5}
    config.write_text(yaml.safe_dump(data))
    out = load_state(merge_cli(tmp_path, config, "combined"))
    base = load_state(tiny_family[0])
    fine = [load_state(p) for p in tiny_family[1:]]
    settings = AWDParameters()
    checked = 0
    for name, tensor in out.items():
        models = [f[name] for f in fine]
        if is_block_linear(name, base[name]):
            work, disentangled = _disentangled_models(base[name], models, settings)
            expected = _get("ties").merge_group(_group(work, disentangled, name),
                                                **_mergekit_parameters("ties", density=0.5))
            checked += 1
        else:
            expected = _get("ties").merge_group(_group(base[name], models, name),
                                                **_mergekit_parameters("ties", density=0.5))
        assert torch.allclose(tensor, expected, rtol=1e-6, atol=1e-7), name
    assert checked > 0
    report = json.loads((tmp_path / "combined" / "awd_report.json").read_text())
    assert report["parameters"]["lambda"] == 1.0 and report["parameters"]["normalize"] is True
    assert report["summary"]["combined_by"] == ["ties"]
    assert report["summary"]["disentangled_tensors"] == checked
    assert report["summary"]["task_arithmetic_tensors"] == 0
    card = (tmp_path / "combined" / "README.md").read_text()
    assert "| combine | ties |" in card


def test_combine_model_scope_through_the_cli(tiny_family, tmp_path):
    """scope: model in front of ties: δ_t = Σ β_k τ_k,t with the scope's β from the report."""
    config = write_config(tmp_path, tiny_family, {"combine": "ties", "scope": "model"})
    out = load_state(merge_cli(tmp_path, config, "model_scope"))
    report = json.loads((tmp_path / "model_scope" / "awd_report.json").read_text())
    (scope,) = report["scopes"].values()
    beta = torch.tensor(scope["coefficients"], dtype=torch.float32)
    base = load_state(tiny_family[0])
    fine = [load_state(p) for p in tiny_family[1:]]
    name = NAME
    taus = torch.stack([f[name] - base[name] for f in fine])
    delta = torch.tensordot(beta, taus, dims=1)
    expected = _get("ties").merge_group(_group(base[name], [base[name] + t - delta for t in taus], name),
                                        **_mergekit_parameters("ties"))
    assert torch.allclose(out[name], expected, rtol=1e-5, atol=1e-6)


def test_parameters_the_combining_method_does_not_take_are_refused(tiny_family, tmp_path, capsys):
    import yaml

    from mergekit_awd.cli import run

    config = write_config(tmp_path, tiny_family, {"rescale": True})
    assert run([str(config), str(tmp_path / "out"), "--quiet"]) != 0
    assert "rescale does nothing with combine: task_arithmetic" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    data = yaml.safe_load(config.read_text())
    data["parameters"] = {"combine": "ties"}
    data["models"][0]["parameters"] = {"gamma": 0.1}
    config.write_text(yaml.safe_dump(data))
    assert run([str(config), str(tmp_path / "out2"), "--quiet"]) != 0
    assert "gamma does nothing with combine: ties (it is a parameter of combine: breadcrumbs_ties)" in capsys.readouterr().err
    assert not (tmp_path / "out2").exists()
    data["parameters"] = {"combine": "tsv", "normalize": True}
    data["models"][0]["parameters"] = {}
    config.write_text(yaml.safe_dump(data))
    assert run([str(config), str(tmp_path / "out3"), "--quiet"]) != 0
    assert "normalize does nothing with combine: tsv" in capsys.readouterr().err
    data["parameters"] = {"combine": "ties", "combine_solver": "exact"}
    config.write_text(yaml.safe_dump(data))
    assert run([str(config), str(tmp_path / "out4"), "--quiet"]) != 0
    assert "combine_solver does nothing with combine: ties (it is a parameter of combine: wudi)" in capsys.readouterr().err
