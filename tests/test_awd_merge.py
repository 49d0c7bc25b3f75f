"""End-to-end: YAML → `mergekit-awd` CLI → mergekit's planner/loader/writer → safetensors."""

import importlib
import json
from pathlib import Path

import pytest
import torch

from conftest import load_state
from mergekit_awd.cli import run
from merge_helpers import is_block_linear, merge_cli, write_config
from reference_awd import paper_delta


def expected_merge(paths, lam, weights, alpha, lr, steps, scope):
    """base + λ Σ w_i (τ_i − δ), δ from the independent reference (test-side recomputation)."""
    states = [load_state(p) for p in paths]
    base = states[0]
    taus = {name: [s[name].double() - base[name].double() for s in states[1:]] for name in base}
    selected = [n for n in base if is_block_linear(n, base[n])]
    deltas = {}
    if scope == "model":
        flat = [torch.cat([taus[n][i].reshape(-1) for n in selected]) for i in range(len(states) - 1)]
        whole = paper_delta(flat, alpha, lr, steps)
        offset = 0
        for n in selected:
            size = base[n].numel()
            deltas[n] = whole[offset:offset + size].reshape(base[n].shape)
            offset += size
    else:
        for n in selected:
            deltas[n] = paper_delta(taus[n], alpha, lr, steps).reshape(base[n].shape)
    out = {}
    for n, b in base.items():
        d = deltas.get(n, torch.zeros_like(b, dtype=torch.float64))
        out[n] = b.double() + lam * sum(w * (t - d) for w, t in zip(weights, taus[n]))
    return out, selected


@pytest.mark.parametrize("scope", ["tensor", "model"])
def test_cli_output_equals_independent_recomputation(tmp_path, tiny_family, scope):
    params = {"lambda": 0.7, "alpha": 0.02, "lr": 0.05, "steps": 25, "optimizer": "gd", "scope": scope}
    weights = [1.0, 0.5, 1.5]
    config = write_config(tmp_path, tiny_family, params, weights=weights)
    out = merge_cli(tmp_path, config, f"out_{scope}")
    merged = load_state(out)
    expected, selected = expected_merge(tiny_family, 0.7, weights, 0.02, 0.05, 25, scope)
    assert len(selected) == 14 and set(merged) == set(expected)
    for name, value in expected.items():
        got = merged[name].double()
        assert torch.allclose(got, value, rtol=1e-5, atol=1e-6), name
    # the disentanglement really changed the selected tensors (the test is not vacuous)
    plain = {n: load_state(tiny_family[0])[n].double() for n in selected[:1]}
    taus = [load_state(p)[selected[0]].double() - plain[selected[0]] for p in tiny_family[1:]]
    task_arithmetic = plain[selected[0]] + 0.7 * sum(w * t for w, t in zip(weights, taus))
    assert not torch.allclose(merged[selected[0]].double(), task_arithmetic, atol=1e-6)
    report = json.loads((out / "awd_report.json").read_text())
    assert report["summary"]["disentangled_tensors"] == 14
    assert report["summary"]["task_arithmetic_tensors"] == len(expected) - 14
    assert report["summary"]["mean_abs_cos_after"] < report["summary"]["mean_abs_cos_before"]
    assert report["parameters"]["scope"] == scope and report["parameters"]["lambda"] == 0.7


def test_reduced_and_direct_agree_through_the_cli(tmp_path, tiny_family):
    params = {"lambda": 1.0, "alpha": 0.01, "lr": 0.05, "steps": 40, "optimizer": "gd"}
    outs = {}
    for solver in ("reduced", "direct"):
        config = write_config(tmp_path, tiny_family, {**params, "solver": solver}, name=f"{solver}.yml")
        outs[solver] = load_state(merge_cli(tmp_path, config, f"out_{solver}"))
    base = load_state(tiny_family[0])
    taus = [load_state(p) for p in tiny_family[1:]]
    for name, b in base.items():
        if not is_block_linear(name, b):
            assert torch.equal(outs["reduced"][name], outs["direct"][name])
            continue
        ta = b + sum(t[name] - b for t in taus)
        # (Σ τ_i − 3δ) differs from task arithmetic by −3δ: compare the two δ estimates
        delta_reduced = (ta - outs["reduced"][name]) / 3
        delta_direct = (ta - outs["direct"][name]) / 3
        assert float(delta_direct.norm()) > 0
        assert float((delta_reduced - delta_direct).norm() / delta_direct.norm()) < 1e-4, name
        # δ lies in the span of the task vectors
        basis = torch.stack([(t[name] - b).reshape(-1) for t in taus], dim=1).double()
        coeffs = torch.linalg.lstsq(basis, delta_direct.reshape(-1, 1).double()).solution
        assert float((basis @ coeffs - delta_direct.reshape(-1, 1)).norm() / delta_direct.norm()) < 1e-3


def test_single_model_equals_task_arithmetic(tmp_path, tiny_family):
    pair = tiny_family[:2]
    awd = merge_cli(tmp_path, write_config(tmp_path, pair, {"lambda": 0.8}, weights=[0.9], name="a.yml"), "awd")
    ta = merge_cli(tmp_path, write_config(tmp_path, pair, {"lambda": 0.8}, weights=[0.9], method="task_arithmetic", name="t.yml"), "ta")
    left, right = load_state(awd), load_state(ta)
    for name in left:
        assert torch.allclose(left[name], right[name], rtol=0, atol=1e-6), name


def test_fine_tune_identical_to_base_gives_finite_output(tmp_path, tiny_family_with_identical):
    for scope in ("tensor", "model"):
        out = merge_cli(tmp_path, write_config(tmp_path, tiny_family_with_identical, {"scope": scope}, name=f"{scope}.yml"), f"o_{scope}")
        state = load_state(out)
        assert all(torch.isfinite(v).all() for v in state.values())
        report = json.loads((out / "awd_report.json").read_text())
        for entry in report["scopes"].values():
            assert entry["coefficients"][1] == 0.0 and entry["active"] == 2


def test_bfloat16_inputs_and_output(tmp_path, tiny_family_bf16):
    out = merge_cli(tmp_path, write_config(tmp_path, tiny_family_bf16, {}, dtype="bfloat16"), "bf16")
    state = load_state(out)
    assert all(v.dtype == torch.bfloat16 and torch.isfinite(v.float()).all() for v in state.values())
    reference = load_state(merge_cli(tmp_path, write_config(tmp_path, tiny_family_bf16, {}, dtype="float32", name="f.yml"), "f32"))
    for name, value in state.items():
        assert torch.allclose(value.float(), reference[name].float(), rtol=2e-2, atol=2e-2), name


def test_output_loads_with_transformers_and_gives_finite_logits(tmp_path, tiny_family):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "loadable"
    assert run([str(write_config(tmp_path, tiny_family, {"scope": "model"})), str(out), "--quiet"]) == 0
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    batch = tokenizer(["w1 w2 w3 w4"], return_tensors="pt")
    logits = model(**batch).logits
    assert logits.shape[-1] == 256 and torch.isfinite(logits).all()
    assert (out / "README.md").exists() and (out / "mergekit_config.yml").exists()


def test_mergekit_options_pass_through(tmp_path, tiny_family):
    out = merge_cli(tmp_path, write_config(tmp_path, tiny_family, {}), "sharded", "--out-shard-size", "40K")
    shards = sorted(out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()


def test_unknown_parameter_name_is_an_error_naming_the_key(tmp_path, tiny_family, capsys):
    config = write_config(tmp_path, tiny_family, {"lamda": 0.3})
    assert run([str(config), str(tmp_path / "never"), "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "lamda" in err and str(config) in err and "lambda" in err
    assert not (tmp_path / "never").exists()


def test_model_scope_without_the_runner_is_a_clear_error(tiny_family):
    from mergekit.merge_methods import get
    from mergekit.merge_methods.base import TensorGroup

    group = TensorGroup.from_tensors([torch.zeros(4, 4), torch.ones(4, 4)], base_index=0,
                                     name="model.layers.0.mlp.up_proj.weight")
    with pytest.raises(RuntimeError, match="scope: model needs the mergekit-awd runner"):
        get("awd")([group], parameters={"scope": "model"})


def test_importing_twice_registers_once():
    import mergekit_awd
    from mergekit.merge_methods import registered_methods

    importlib.reload(mergekit_awd)
    mergekit_awd.register_methods()
    names = [m.spec.name for m in registered_methods()]
    assert names.count("awd") == 1


def build_tiny_bert_family(root: Path, n_models: int = 2):
    """A tiny BertModel base and fine-tunes (BERT has an optional aliased weight, position_ids)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(3)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64)
    model = BertModel(config)
    paths = [root / "base"] + [root / f"ft_{i}" for i in range(n_models)]
    model.save_pretrained(str(paths[0]))
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    for i, path in enumerate(paths[1:]):
        state = {k: (v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v) for k, v in base_state.items()}
        model.load_state_dict(state)
        model.save_pretrained(str(path))
    return paths


@pytest.mark.parametrize("method, parameters", [("awd", {"scope": "model"}), ("awd", {}), ("task_arithmetic", {"lambda": 0.5})])
def test_bert_merges_through_the_planner_fix(tmp_path, method, parameters):
    from transformers import AutoModel

    paths = build_tiny_bert_family(tmp_path / "bert")
    config = write_config(tmp_path, paths, parameters, weights=[1.0, 1.0], method=method)
    out = merge_cli(tmp_path, config, "bert_out")
    model = AutoModel.from_pretrained(str(out))
    hidden = model(input_ids=torch.tensor([[1, 5, 7, 2]])).last_hidden_state
    assert torch.isfinite(hidden).all()
    if method == "awd":
        report = json.loads((out / "awd_report.json").read_text())
        assert report["summary"]["disentangled_tensors"] == 12  # 6 linear weights × 2 layers
