"""Layer-wise coefficients (issue #29, groundwork): the groups, θ(Λ), and the plain mergekit YAML that
reproduces a learned Λ with ``mergekit-awd merge`` (task arithmetic and AWD AdaMerging)."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mergekit_awd import run_merge
from mergekit_awd.core.awd import AWDParameters
from mergekit_awd.core.awd_delta import TaskVectors, disentangle, solve_delta
from mergekit_awd.core.layerwise import merged_state, ordered_groups, tensor_group
from mergekit_awd.core.selection import is_disentangled
from mergekit_awd.errors import ConfigError, EvaluationDataError
from mergekit_awd.mergekit_adapter.layerwise_config import layerwise_configuration, weight_filters
from mergekit_awd.testing.synthetic import build_family, merge_config


@pytest.mark.parametrize("name, group", [
    ("model.embed_tokens.weight", "embed"), ("model.layers.0.self_attn.q_proj.weight", "block.0"),
    ("model.layers.11.mlp.up_proj.weight", "block.11"), ("model.norm.weight", "norm"), ("lm_head.weight", "head"),
    ("transformer.h.3.attn.c_attn.weight", "block.3"), ("transformer.ln_f.weight", "norm"),
    ("bert.encoder.layer.5.output.dense.weight", "block.5"), ("bert.embeddings.LayerNorm.weight", "embed"),
])
def test_tensor_groups(name, group):
    assert tensor_group(name) == group and tensor_group(name, "task") == "all"


def test_group_order_and_filters_that_do_not_confuse_layer_1_with_layer_11():
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in (11, 1, 2)] + ["lm_head.weight", "model.norm.weight",
                                                                            "model.embed_tokens.weight"]
    groups = ordered_groups(names)
    assert groups == ["embed", "block.1", "block.2", "block.11", "norm", "head"]
    entries = weight_filters(names, groups, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    assert {"filter": ".layers.1.", "value": 0.2} in entries and {"filter": ".layers.11.", "value": 0.4} in entries


def _family_state(paths):
    states = [load_file(str(p / "model.safetensors")) for p in paths]
    return states[0], states[1:]


def _parts(base, models, method):
    """D_i per tensor: τ_i (task arithmetic) or τ_i − δ where awd disentangles (scope tensor)."""
    settings = AWDParameters(steps=20)
    parts = {}
    for name, tensor in base.items():
        vectors = TaskVectors(tensor, [m[name] for m in models])
        if method == "awd" and is_disentangled(name, tensor.ndim, settings.select):
            parts[name] = disentangle(vectors, solve_delta(vectors, settings))
        else:
            parts[name] = vectors.stack()
    return parts


@pytest.mark.parametrize("method, parameters", [("task_arithmetic", {}), ("awd", {"steps": 20})])
def test_the_written_configuration_merges_into_the_learned_weights(tmp_path, method, parameters):
    paths = build_family(tmp_path / "family", n_models=3, seed=0)
    base, models = _family_state(paths)
    names = sorted(base)
    groups = ordered_groups(names)
    coefficients = torch.rand((3, len(groups)), generator=torch.Generator().manual_seed(0)) + 0.1
    learned = merged_state(base, _parts(base, models, method), coefficients, {n: groups.index(tensor_group(n))
                                                                           for n in names})
    config = layerwise_configuration(merge_config(method, paths, parameters), coefficients, groups, names)
    (tmp_path / "tuned.yml").write_text(yaml.safe_dump(config))
    run_merge(tmp_path / "tuned.yml", tmp_path / "out", copy_tokenizer=False, quiet=True)
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(merged) == set(learned)
    for name in names:
        torch.testing.assert_close(merged[name], learned[name].to(merged[name].dtype), rtol=1e-6, atol=1e-6)
    # a wrong coefficient shows: the comparison is not vacuous
    assert not torch.allclose(merged[names[1]], merged_state(base, _parts(base, models, method), coefficients * 0.5,
                                                            {n: groups.index(tensor_group(n)) for n in names})[names[1]])


def test_only_methods_with_per_task_parts_are_written(tmp_path):
    paths = build_family(tmp_path / "family", n_models=2, seed=0)
    for method, parameters in (("ties", {"density": 0.5}), ("awd", {"combine": "ties"}), ("tsv", {})):
        with pytest.raises(ConfigError, match="layer-wise coefficients are written for"):
            layerwise_configuration(merge_config(method, paths, parameters), torch.ones(2, 1), ["all"], ["x"], "task")


def _objective_setup(paths):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_awd.testing.synthetic import VOCAB_WORDS

    model = AutoModelForCausalLM.from_pretrained(str(paths[0]), dtype=torch.float64).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(paths[0]))
    words = VOCAB_WORDS[:12]
    base, models = _family_state(paths)
    base = {k: v.double() for k, v in base.items()}
    parts = {k: v.double() for k, v in _parts(base, [{n: t.double() for n, t in m.items()} for m in models],
                                               "task_arithmetic").items()}
    names = sorted(parts)
    groups = ordered_groups(names)
    index = {n: groups.index(tensor_group(n)) for n in names}
    return model, tokenizer, words, base, parts, groups, index


@pytest.mark.parametrize("objective", ["likelihood", "entropy"])
def test_the_objective_gradient_matches_finite_differences(tmp_path, objective):
    """∂ objective / ∂λ_{i,g} by autograd through θ(Λ) equals central differences (float64)."""
    from mergekit_awd.tools.layerwise_objective import PromptExample, objective_value, parameters_of
    from mergekit_awd.tools.lm_scoring import AnswerExample, ChoiceExample

    paths = build_family(tmp_path / "family", n_models=2, seed=3)
    model, tokenizer, w, base, parts, groups, index = _objective_setup(paths)
    examples = [ChoiceExample(f"{w[0]} {w[1]} {w[2]}", (f" {w[3]}", f" {w[4]} {w[5]}"), 1),
                ChoiceExample(f"{w[6]} {w[7]}", (f" {w[8]}", f" {w[9]}", f" {w[10]}"), 0),
                AnswerExample(f"{w[2]} {w[4]}", f" {w[11]} {w[1]}")]
    if objective == "entropy":
        examples.append(PromptExample(f"{w[5]} {w[3]} {w[0]}"))

    def value(coefficients):
        return objective_value(model, parameters_of(model, merged_state(base, parts, coefficients, index)),
                               tokenizer, examples, objective)

    coefficients = (torch.rand((2, len(groups)), generator=torch.Generator().manual_seed(1), dtype=torch.float64)
                    + 0.2).requires_grad_(True)
    (gradient,) = torch.autograd.grad(value(coefficients), coefficients)
    assert float(gradient.abs().max()) > 1e-4  # the objective does depend on Λ
    # LLaMA's RMSNorm and rotary embedding compute in float32 even in a float64 model, so the
    # objective carries float32 rounding: a step of 1e-3 keeps it below the central difference's
    # O(step²) error, and the bound is relative (a wrong gradient is off by its own size)
    step = 1e-3
    for i in range(coefficients.shape[0]):
        for g in range(coefficients.shape[1]):
            shift = torch.zeros_like(coefficients)
            shift[i, g] = step
            with torch.no_grad():
                numeric = float((value(coefficients + shift) - value(coefficients - shift)) / (2 * step))
            assert abs(numeric - float(gradient[i, g])) <= 1e-2 * abs(numeric) + 2e-5, (groups[g], i, numeric)


def test_the_likelihood_objective_refuses_unlabelled_lines(tmp_path):
    from mergekit_awd.tools.layerwise_objective import PromptExample, objective_value, parameters_of

    paths = build_family(tmp_path / "family", n_models=2, seed=3)
    model, tokenizer, w, base, parts, groups, index = _objective_setup(paths)
    params = parameters_of(model, merged_state(base, parts, torch.ones((2, len(groups)), dtype=torch.float64), index))
    with pytest.raises(EvaluationDataError, match="needs labelled lines"):
        objective_value(model, params, tokenizer, [PromptExample(f"{w[0]} {w[1]}")], "likelihood")
    assert float(objective_value(model, params, tokenizer, [PromptExample(f"{w[0]} {w[1]}")], "entropy")) > 0
