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
    for method, parameters in (("ties", {"density": 0.5}), ("awd", {"combine": "ties"}), ("wudi", {})):
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
    from mergekit_awd.tools.layerwise_objective import objective_value, parameters_of
    from mergekit_awd.tools.lm_scoring import PromptExample
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
    from mergekit_awd.tools.layerwise_objective import objective_value, parameters_of
    from mergekit_awd.tools.lm_scoring import PromptExample

    paths = build_family(tmp_path / "family", n_models=2, seed=3)
    model, tokenizer, w, base, parts, groups, index = _objective_setup(paths)
    params = parameters_of(model, merged_state(base, parts, torch.ones((2, len(groups)), dtype=torch.float64), index))
    with pytest.raises(EvaluationDataError, match="needs labelled lines"):
        objective_value(model, params, tokenizer, [PromptExample(f"{w[0]} {w[1]}")], "likelihood")
    assert float(objective_value(model, params, tokenizer, [PromptExample(f"{w[0]} {w[1]}")], "entropy")) > 0


def _configuration(paths, method, parameters):
    from mergekit_awd.pipeline.config import load_config

    config, _, _ = load_config(merge_config(method, paths, parameters))
    return config


@pytest.mark.parametrize("method, parameters", [
    ("task_arithmetic", {}), ("awd", {"steps": 20}), ("awd", {"scope": "row", "steps": 20}),
    ("awd", {"scope": "model", "steps": 20}), ("awd", {"select": "matrices", "steps": 20}), ("tsv", {}),
    ("tsv", {"select": "matrices", "svd": "lowrank"}), ("tsv", {"disentangle": True, "steps": 20}),
])
def test_the_parts_read_from_the_models_reproduce_the_merge_of_the_written_configuration(tmp_path, method,
                                                                                       parameters):
    """``per_task_parts`` (mergekit's loaders, AWD's own δ entry, TSV-M's per-task blocks) and Λ give
    exactly what ``mergekit-awd merge`` of the written configuration gives: AWD AdaMerging at every
    scope, the tensors chosen as the merge chooses them (``select: matrices`` leaves the embeddings
    out by their vocabulary axis), and TSV-M with positive per-layer weights."""
    from mergekit_awd.tools.layerwise import per_task_parts

    paths = build_family(tmp_path / "family", n_models=3, seed=4)
    problem = per_task_parts(_configuration(paths, method, parameters), "test")
    coefficients = torch.rand((3, len(problem.groups)), generator=torch.Generator().manual_seed(2)) + 0.2
    learned = problem.state(coefficients)
    names = sorted(problem.parts)
    config = layerwise_configuration(merge_config(method, paths, parameters), coefficients, problem.groups, names)
    (tmp_path / "tuned.yml").write_text(yaml.safe_dump(config))
    run_merge(tmp_path / "tuned.yml", tmp_path / "out", copy_tokenizer=False, quiet=True)
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    for name in names:
        torch.testing.assert_close(merged[name], learned[name].to(merged[name].dtype), rtol=1e-6, atol=1e-6)


def test_methods_without_per_task_parts_are_refused_in_one_line(tmp_path):
    from mergekit_awd.tools.layerwise import per_task_parts

    paths = build_family(tmp_path / "family", n_models=2, seed=4)
    with pytest.raises(ConfigError, match="ties has none"):
        per_task_parts(_configuration(paths, "ties", {"density": 0.5}), "c.yml")
    with pytest.raises(ConfigError, match="combine: tsv has no per-task parts"):
        per_task_parts(_configuration(paths, "awd", {"combine": "tsv"}), "c.yml")


def _learning_setup(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mergekit_awd.testing.synthetic import VOCAB_WORDS as w
    from mergekit_awd.tools.layerwise import per_task_parts
    from mergekit_awd.tools.lm_scoring import ChoiceExample

    paths = build_family(tmp_path / "family", n_models=2, seed=5)
    problem = per_task_parts(_configuration(paths, "task_arithmetic", {}), "test")
    model = AutoModelForCausalLM.from_pretrained(str(paths[0]), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(paths[0]))
    lines = [ChoiceExample(f"{w[i]} {w[i + 1]}", (f" {w[i + 2]}", f" {w[i + 3]}"), i % 2) for i in range(12)]
    return problem, model, tokenizer, lines[:8], lines[8:]


def test_learning_lowers_the_objective_and_keeps_the_best_held_out_step(tmp_path):
    from mergekit_awd.core.layerwise import initial_coefficients
    from mergekit_awd.tools.layerwise import learn_coefficients
    from mergekit_awd.tools.layerwise_objective import objective_value, parameters_of

    problem, model, tokenizer, train, held_out = _learning_setup(tmp_path)
    start = initial_coefficients(2, len(problem.groups))
    with torch.no_grad():
        before = float(objective_value(model, parameters_of(model, problem.state(start)), tokenizer, train,
                                       "likelihood"))
    result = learn_coefficients(problem, model, tokenizer, train, held_out, "likelihood", steps=30, lr=0.05,
                                batch_size=4, eval_every=5)
    assert result.train_value < before
    assert result.held_out_value == min([result.initial_held_out_value] + [h for _, _, h in result.history])
    # held-out lines the training fits: early stopping keeps a learned Λ, not Λ⁰
    fitted = learn_coefficients(problem, model, tokenizer, train, train[:4], "likelihood", steps=30, lr=0.05,
                                batch_size=4, eval_every=5)
    assert fitted.best_step > 0 and fitted.held_out_value < fitted.initial_held_out_value
    assert fitted.coefficients.shape == (2, len(problem.groups)) and not torch.equal(fitted.coefficients, start)


def test_a_killed_layerwise_tuning_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    from mergekit_awd.tools import layerwise

    problem, model, tokenizer, train, held_out = _learning_setup(tmp_path)
    arguments = dict(objective="entropy", steps=20, lr=0.05, batch_size=4, eval_every=5)
    straight = layerwise.learn_coefficients(problem, model, tokenizer, train, held_out, **arguments)
    real, calls = layerwise.objective_value, []

    def killed_at_step_13(*args, **kwargs):
        calls.append(1)
        if len(calls) == 17:  # the initial held-out value, 12 steps, 2 held-out evaluations, then step 13
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(layerwise, "objective_value", killed_at_step_13)
    checkpoint = tmp_path / "layerwise.pt"
    with pytest.raises(KeyboardInterrupt):
        layerwise.learn_coefficients(problem, model, tokenizer, train, held_out, checkpoint=checkpoint, **arguments)
    counted = []
    monkeypatch.setattr(layerwise, "objective_value", lambda *a, **k: counted.append(1) or real(*a, **k))
    resumed = layerwise.learn_coefficients(problem, model, tokenizer, train, held_out, checkpoint=checkpoint,
                                           **arguments)
    assert len(counted) == 14  # steps 11-20, evaluations at 15 and 20, the final training value (2 batches)
    assert torch.equal(resumed.coefficients, straight.coefficients)
    assert resumed.history == straight.history and resumed.best_step == straight.best_step


def _tune_data(tmp_path):
    import json

    from mergekit_awd.testing.synthetic import VOCAB_WORDS as w

    lines = [{"prompt": f"{w[i]} {w[i + 1]}", "choices": [f" {w[i + 2]}", f" {w[i + 3]}"], "label": i % 2,
              "task": "cls"} for i in range(10)]
    lines += [{"prompt": f"{w[i + 20]} {w[i + 21]}", "answer": f" {w[i + 22]}", "task": "gen"} for i in range(6)]
    path = tmp_path / "val.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize("method, parameters", [("task_arithmetic", {}), ("awd", {"steps": 10, "scope": "row"})])
def test_tune_layerwise_writes_a_configuration_that_merges_into_the_learned_model(tmp_path, method, parameters):
    import json

    from mergekit_awd.cli import run
    from mergekit_awd.tools.layerwise import per_task_parts

    paths = build_family(tmp_path / "family", n_models=2, seed=6)
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config(method, paths, {**parameters, "lambda": 0.5}, weights=[1.0, 1.0])))
    out = tmp_path / "tune"
    assert run(["tune", str(config), "--data", str(_tune_data(tmp_path)), "--grid", "lambda=0.5,1.0", "--out", str(out),
                "--layerwise", "--layerwise-steps", "12", "--layerwise-lr", "0.05", "--quiet"]) == 0
    report = json.loads((out / "tune_report.json").read_text())
    entry = report["layerwise"]
    assert entry["objective"] == "likelihood" and entry["groups"][0] == "embed" and entry["steps"] == 12
    assert entry["train_lines"] == 13 and entry["held_out_lines"] == 3  # every 4th line of each task
    assert {"validation_score", "held_out_score", "scalar_validation_score", "coefficients"} <= set(entry)
    assert entry["scalar_validation_score"] == report["chosen_score"]
    assert (out / "tune_layerwise.png").is_file()
    tuned = tmp_path / "merge.tuned.yml"
    assert "layer-wise (likelihood)" in tuned.read_text()
    run_merge(tuned, tmp_path / "merged", copy_tokenizer=False, quiet=True)
    merged = load_file(str(tmp_path / "merged" / "model.safetensors"))
    problem = per_task_parts(_configuration(paths, method, parameters), "test")
    learned = problem.state(torch.tensor(entry["coefficients"]))
    for name in problem.parts:
        torch.testing.assert_close(merged[name], learned[name], rtol=1e-6, atol=1e-6)


def test_tune_layerwise_refuses_a_method_without_per_task_parts_before_merging(tmp_path, capsys):
    from mergekit_awd.cli import run

    paths = build_family(tmp_path / "family", n_models=2, seed=6)
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("iso_c", paths, {})))
    out = tmp_path / "tune"
    assert run(["tune", str(config), "--data", str(_tune_data(tmp_path)), "--out", str(out), "--layerwise",
                "--quiet"]) == 1
    assert "iso_c has none" in capsys.readouterr().err
    assert not (out / "tune_points.jsonl").exists()


def test_tune_methods_chooses_the_method_with_lambda_and_writes_the_winner(tmp_path, capsys):
    import json

    from mergekit_awd.cli import run

    paths = build_family(tmp_path / "family", n_models=2, seed=7)
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("awd", paths, {"alpha": 0.01, "steps": 10}, weights=[1.0, 1.0])))
    out = tmp_path / "tune"
    argv = ["tune", str(config), "--data", str(_tune_data(tmp_path)), "--out", str(out), "--quiet",
            "--methods", "task_arithmetic,ties,awd,tsv", "--grid", "lambda=0.5,1.0"]
    assert run(argv) == 0
    report = json.loads((out / "tune_methods.json").read_text())
    assert set(report["methods"]) == {"task_arithmetic", "ties", "awd", "tsv"}
    scores = {m: e["score"] for m, e in report["methods"].items()}
    assert scores[report["winner"]] == max(scores.values())
    for method in report["methods"]:  # each method tuned in its own folder, one merge on the λ path
        assert json.loads((out / method / "tune_report.json").read_text())["merges"] == 1
    tuned = yaml.safe_load((tmp_path / "merge.tuned.yml").read_text())
    assert tuned["merge_method"] == report["winner"]
    assert tuned["parameters"]["lambda"] == report["methods"][report["winner"]]["chosen"]["lambda"]
    if report["winner"] != "awd":
        assert "alpha" not in tuned["parameters"]  # a parameter the method does not take is dropped
    assert "<- chosen" in capsys.readouterr().out
    # unknown method, or a method tune cannot move along λ: refused before any tune
    assert run(["tune", str(config), "--data", str(_tune_data(tmp_path)), "--out", str(tmp_path / "t2"), "--quiet",
                "--methods", "task_arithmetic,slerp"]) == 1
    assert not (tmp_path / "t2").exists()


def test_method_configuration_keeps_what_each_method_takes(tmp_path):
    from mergekit_awd.tools.tune_methods import method_configuration

    paths = build_family(tmp_path / "family", n_models=2, seed=7)
    config = merge_config("awd", paths, {"alpha": 0.01, "lambda": 0.4}, weights=[1.0, 2.0])
    ties = method_configuration(config, "ties")
    assert ties["parameters"] == {"lambda": 0.4}
    assert [m["parameters"] for m in ties["models"]] == [{"weight": 1.0, "density": 0.5}, {"weight": 2.0, "density": 0.5}]
    assert method_configuration(config, "awd")["parameters"] == {"alpha": 0.01, "lambda": 0.4}


def test_tune_layerwise_entropy_learns_from_unlabelled_lines_too(tmp_path):
    """``--objective entropy`` trains on the unlabelled lines as well (labels unused); the grid and the
    validation score use the labelled ones."""
    import json

    from mergekit_awd.cli import run

    paths = build_family(tmp_path / "family", n_models=2, seed=8)
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("awd", paths, {"steps": 10}, weights=[1.0, 1.0])))
    data = _tune_data(tmp_path)
    with open(data, "a", encoding="utf-8") as handle:
        for i in range(8):
            handle.write(json.dumps({"prompt": f"w{40 + i} w{41 + i}", "task": "cls",
                                     **({"choices": [" w50", " w51"]} if i % 2 else {})}) + "\n")
    out = tmp_path / "tune"
    assert run(["tune", str(config), "--data", str(data), "--grid", "lambda=0.5,1.0", "--out", str(out), "--quiet",
                "--layerwise", "--objective", "entropy", "--layerwise-steps", "6", "--layerwise-lr", "0.05"]) == 0
    entry = json.loads((out / "tune_report.json").read_text())["layerwise"]
    assert entry["objective"] == "entropy" and entry["train_lines"] + entry["held_out_lines"] == 16 + 8
    assert set(entry["validation_tasks"]) == {"cls", "gen"}


def test_single_token_choices_read_from_the_prompt_equal_scoring_each_choice(tmp_path):
    from mergekit_awd.tools.layerwise_objective import _choice_log_likelihoods, continuation_log_likelihood, \
        parameters_of
    from mergekit_awd.tools.lm_scoring import ChoiceExample, encode_continuation, encode_prompt

    paths = build_family(tmp_path / "family", n_models=2, seed=3)
    model, tokenizer, w, base, parts, groups, index = _objective_setup(paths)
    params = parameters_of(model, merged_state(base, parts, torch.full((2, len(groups)), 0.3, dtype=torch.float64),
                                               index))
    examples = [ChoiceExample(f"{w[0]} {w[1]} {w[2]}", (f" {w[3]}", f" {w[4]}", f" {w[5]}"), 0),
                ChoiceExample(f"{w[6]}", (f" {w[7]}", f" {w[8]}"), 1)]
    with torch.no_grad():
        shortcut = _choice_log_likelihoods(model, params, tokenizer, examples, 0)
        for example, values in zip(examples, shortcut):
            pairs = [(encode_prompt(tokenizer, example.prompt), encode_continuation(tokenizer, c)) for c in example.choices]
            torch.testing.assert_close(values, continuation_log_likelihood(model, params, pairs, 0), rtol=1e-6, atol=1e-6)


def test_tsv_weights_stay_positive_in_learning_and_in_the_written_configuration(tmp_path):
    """TSV-M's parts hold for positive weights only: Adam is projected on the minimum, and a
    configuration with a smaller weight is refused in one line."""
    from mergekit_awd.mergekit_adapter.layerwise_config import TSV_MINIMUM_WEIGHT
    from mergekit_awd.tools.layerwise import learn_coefficients, per_task_parts

    problem, model, tokenizer, train, held_out = _learning_setup(tmp_path)
    paths = build_family(tmp_path / "family", n_models=2, seed=5)
    tsv = per_task_parts(_configuration(paths, "tsv", {}), "test")
    assert (tsv.initial, tsv.minimum) == (1.0, TSV_MINIMUM_WEIGHT)
    result = learn_coefficients(tsv, model, tokenizer, train, train, "likelihood", steps=12, lr=2.0, batch_size=4,
                                eval_every=1)  # steps far larger than the coefficients: some hit the bound
    assert float(result.coefficients.min()) >= TSV_MINIMUM_WEIGHT
    with pytest.raises(ConfigError, match="at least"):
        layerwise_configuration(merge_config("tsv", paths, {}), torch.full((2, 1), -0.5), ["all"], ["x"], "task")


def test_learning_shows_its_steps_with_an_eta_unless_quiet(tmp_path, capsys):
    from mergekit_awd.tools.layerwise import learn_coefficients

    problem, model, tokenizer, train, held_out = _learning_setup(tmp_path)
    learn_coefficients(problem, model, tokenizer, train, held_out, "likelihood", steps=4, lr=0.05, batch_size=4,
                       eval_every=2, progress=True)
    err = capsys.readouterr().err
    assert "tune --layerwise" in err and "4/4" in err
    learn_coefficients(problem, model, tokenizer, train, held_out, "likelihood", steps=4, lr=0.05, batch_size=4,
                       eval_every=2)
    assert "tune --layerwise" not in capsys.readouterr().err
