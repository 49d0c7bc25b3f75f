"""``mergekit-awd tune``: the linear λ path, the scores, the JSONL checks, the outputs and the cache."""

import json

import pytest
import torch
import yaml

from conftest import load_state
from merge_helpers import write_config
from mergekit_awd.cli import run
from mergekit_awd.errors import ConfigError, EvaluationDataError
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.tools.tune import TUNED_MARKER, parse_grid
from mergekit_awd.tools.tune_path import ModelOnPath
from mergekit_awd.tools.tune_data import read_tuning_data, score_model


def _model(folder):
    from transformers import LlamaForCausalLM

    return LlamaForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _merged_state(tmp_path, paths, method, parameters, name):
    config = write_config(tmp_path, paths, parameters, method=method, name=f"{name}.yml")
    run_merge(str(config), tmp_path / name, quiet=True, copy_tokenizer=False)
    return load_state(tmp_path / name)


@pytest.mark.parametrize("method,parameters", [("awd", {}), ("ties", {"density": 0.5}), ("tsv", {}), ("ace", {})])
def test_linear_path_equals_merging_at_each_lambda(tiny_family, tmp_path, method, parameters):
    config = write_config(tmp_path, tiny_family, {**parameters, "lambda": 1.0}, method=method)
    data = yaml.safe_load(config.read_text())
    if "density" in parameters:  # ties' density is per model
        data["parameters"].pop("density")
        for entry in data["models"]:
            entry["parameters"] = {"weight": 1.0, "density": parameters["density"]}
    run_merge(data, tmp_path / "at_one", quiet=True, copy_tokenizer=False)
    path = ModelOnPath(_model(tiny_family[0]))
    path.set_direction(str(tiny_family[0]), str(tmp_path / "at_one"))
    for lam in (0.3, 0.7, 1.5):  # moved in place from the previous λ
        path.move_to(lam)
        data["parameters"]["lambda"] = lam
        run_merge(data, tmp_path / f"at_{lam}", quiet=True, copy_tokenizer=False)
        expected = load_state(tmp_path / f"at_{lam}")
        state = path.model.state_dict()
        for name, tensor in expected.items():
            assert torch.allclose(state[name], tensor, rtol=1e-5, atol=1e-6), (lam, name)


def _write_lines(path, lines):
    path.write_text("\n".join(json.dumps(line) if not isinstance(line, str) else line for line in lines) + "\n")
    return path


def test_scores_equal_a_direct_log_likelihood(tiny_family, tmp_path):
    from transformers import AutoTokenizer

    data = read_tuning_data(_write_lines(tmp_path / "val.jsonl", [
        {"prompt": "w1 w2 w3", "answer": " w4", "task": "gen"},
        {"prompt": "w5 w6", "answer": " w7 w8", "task": "gen"},
        {"prompt": "w9 w10", "choices": [" w11", " w12", " w13"], "label": 2, "task": "cls"},
        {"prompt": "w14", "choices": [" w15", " w16"], "label": 0, "task": "cls"},
    ]))
    model = _model(tiny_family[0])
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_family[0]))
    scores = score_model(model, tokenizer, data, batch_size=2)

    def log_likelihood(prompt, answer, eos=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
        answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"] + ([tokenizer.eos_token_id] if eos else [])
        ids = torch.tensor([prompt_ids + answer_ids])
        with torch.no_grad():
            logits = model(ids).logits.log_softmax(-1)[0]
        return sum(float(logits[len(prompt_ids) - 1 + t, token]) for t, token in enumerate(answer_ids))

    expected = (log_likelihood("w1 w2 w3", " w4") + log_likelihood("w5 w6", " w7 w8")) / 2
    assert scores["gen"]["log_likelihood"] == pytest.approx(expected, rel=1e-5)
    picks = [max(range(3), key=lambda c: log_likelihood("w9 w10", [" w11", " w12", " w13"][c], eos=False)),
             max(range(2), key=lambda c: log_likelihood("w14", [" w15", " w16"][c], eos=False))]
    assert scores["cls"]["score"] == pytest.approx(((picks[0] == 2) + (picks[1] == 0)) / 2)
    assert 0.0 <= scores["gen"]["score"] <= 1.0


BAD_LINES = [
    ("{not json", "not valid JSON"),
    ('["prompt"]', "expected a JSON object"),
    ('{"answer": " w1"}', '"prompt" must be a non-empty string'),
    ('{"prompt": "w1", "label": 0}', '"label" belongs with "choices"'),
    ('{"prompt": "w1", "answer": " w2", "choices": [" a", " b"], "label": 0}', 'either "answer"'),
    ('{"prompt": "w1", "choices": [" a", " a"]}', "are the same text"),
    ('{"prompt": "w1", "choices": [" a", " b"], "label": 2}', '"label" must be an integer from 0 to 1'),
    ('{"prompt": "w1", "choices": [" a", " b"], "label": true}', '"label" must be an integer'),
    ('{"prompt": "w1", "choices": [" a"], "label": 0}', "at least two"),
    ('{"prompt": "w1", "answer": ""}', '"answer" must be a non-empty string'),
    ('{"prompt": "w1", "answer": " w2", "extra": 1}', "unknown key"),
    ('{"prompt": "w1", "choices": [" a", " b"], "label": 0, "task": "t0"}', "mixes generative and classification"),
]


@pytest.mark.parametrize("line,message", BAD_LINES)
def test_bad_jsonl_lines_name_the_file_and_line(tmp_path, line, message):
    path = _write_lines(tmp_path / "val.jsonl", ['{"prompt": "w1", "answer": " w2", "task": "t0"}', "", line])
    with pytest.raises(EvaluationDataError, match=message) as caught:
        read_tuning_data(path)
    assert caught.value.path == str(path) and caught.value.line == 3
    assert f"{path}, line 3:" in str(caught.value)


def test_unlabelled_lines_are_kept_apart_and_a_file_needs_labelled_ones(tmp_path):
    """A prompt alone, or choices without a label: scored by nothing, kept for --layerwise's entropy."""
    path = _write_lines(tmp_path / "val.jsonl", [
        {"prompt": "w1", "task": "t"}, {"prompt": "w2", "choices": [" a", " b"], "task": "t"},
        {"prompt": "w3", "choices": [" a", " b"], "label": 1, "task": "t"}])
    data = read_tuning_data(path)
    [task] = data.tasks
    assert task.kind == "choices" and len(task.examples) == 1 and task.lines == [3]
    assert [e.choices for e in task.unlabelled] == [(), (" a", " b")] and task.unlabelled_lines == [1, 2]
    only = _write_lines(tmp_path / "unlabelled.jsonl", [{"prompt": "w1"}, {"prompt": "w2", "choices": [" a", " b"]}])
    with pytest.raises(EvaluationDataError, match="no labelled line"):
        read_tuning_data(only)


def test_empty_data_file_is_refused(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text("\n\n")
    with pytest.raises(EvaluationDataError, match="no examples"):
        read_tuning_data(path)


def test_grid_syntax():
    assert parse_grid("lambda=0.1:0.5:0.1").values == (0.1, 0.2, 0.3, 0.4, 0.5)
    assert parse_grid("alpha=0.01,0.03").values == (0.01, 0.03)
    assert parse_grid("scope=tensor,model").values == ("tensor", "model")
    for bad in ("lambda", "lambda=", "lambda=1:0:0.1", "lambda=0:1:0", "lambda=a:b:c", "alpha=1,1"):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def _data(tmp_path):
    return _write_lines(tmp_path / "val.jsonl", [
        {"prompt": "w1 w2 w3", "answer": " w4", "task": "gen"},
        {"prompt": "w9 w10", "choices": [" w11", " w12"], "label": 1, "task": "cls"},
        {"prompt": "w14", "choices": [" w15", " w16"], "label": 0, "task": "cls"},
    ])


def test_tune_cli_writes_the_report_the_tuned_config_and_the_same_merge(tiny_family, tmp_path, capsys):
    config = write_config(tmp_path, tiny_family, {}, method="awd")
    data = _data(tmp_path)
    out, merged = tmp_path / "tune", tmp_path / "merged"
    argv = [str(config), "--data", str(data), "--grid", "lambda=0.2:1.0:0.4", "--out", str(out), "--quiet",
            "--reference", f"cls={tiny_family[1]}"]
    assert run(["tune", *argv, "--merge", str(merged)]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "tune_report.json").read_text())
    assert [p["parameters"]["lambda"] for p in report["points"]] == [0.2, 0.6, 1.0]
    assert report["merges"] == 1 and report["evaluations"] == 4  # one merge for the λ path, + the reference
    assert 0 < report["merge_seconds"] and 0 < report["evaluation_seconds"]
    assert report["merge_seconds"] + report["evaluation_seconds"] <= report["seconds"]
    reference = report["references"]["cls"]
    for point in report["points"]:  # cls normalized by its reference's score, gen as it is
        tasks = point["tasks"]
        expected = (tasks["gen"]["score"] + (tasks["cls"]["score"] / reference if reference else tasks["cls"]["score"])) / 2
        assert point["score"] == pytest.approx(expected)
    assert "chosen: lambda = " in printed
    tuned = tmp_path / "merge.tuned.yml"
    text = tuned.read_text()
    assert text.startswith(TUNED_MARKER)
    best = yaml.safe_load(text)
    assert best["parameters"]["lambda"] == report["chosen"]["lambda"]
    # --merge is the normal pipeline's merge of the chosen configuration, bit for bit
    run_merge(best, tmp_path / "again", quiet=True)
    for name, tensor in load_state(tmp_path / "again").items():
        assert torch.equal(load_state(merged)[name], tensor), name
    assert "chosen with `mergekit-awd tune`" in (merged / "README.md").read_text()
    assert (out / "tune.md").exists() and report["files"]["table"] == str(out / "tune.md")
    pytest.importorskip("matplotlib")
    assert (out / "tune_scores.png").stat().st_size > 0
    # a second run resumes from the cache: nothing merged or scored again
    assert run(["tune", *argv]) == 0
    assert "3 of 3 points from the cache" in capsys.readouterr().out
    again = json.loads((out / "tune_report.json").read_text())
    assert again["merges"] == 0 and again["evaluations"] == 0 and again["chosen"] == report["chosen"]
    assert again["merge_seconds"] == 0 and again["evaluation_seconds"] == 0


def test_tune_remerges_for_each_value_of_a_non_lambda_axis(tiny_family, tmp_path):
    config = write_config(tmp_path, tiny_family, {}, method="awd")
    out = tmp_path / "tune"
    assert run(["tune", str(config), "--data", str(_data(tmp_path)), "--grid", "alpha=0.01,0.1",
                "--grid", "lambda=0.3,0.6", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "tune_report.json").read_text())
    assert report["merges"] == 2 and report["evaluations"] == 4


def test_tune_refuses_bad_data_and_foreign_files_before_writing(tiny_family, tmp_path, capsys):
    config = write_config(tmp_path, tiny_family, {}, method="awd")
    bad = _write_lines(tmp_path / "bad.jsonl", ['{"prompt": "w1", "answer": " w2"}', "{oops"])
    out = tmp_path / "tune"
    assert run(["tune", str(config), "--data", str(bad), "--out", str(out), "--quiet"]) != 0
    assert f"{bad}, line 2: not valid JSON" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "merge.tuned.yml").exists()
    (tmp_path / "merge.tuned.yml").write_text("mine: true\n")
    assert run(["tune", str(config), "--data", str(_data(tmp_path)), "--out", str(out), "--quiet"]) != 0
    assert "was not written by mergekit-awd tune" in capsys.readouterr().err
    assert (tmp_path / "merge.tuned.yml").read_text() == "mine: true\n" and not out.exists()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    (tmp_path / "merge.tuned.yml").unlink()
    assert run(["tune", str(config), "--data", str(_data(tmp_path)), "--out", str(foreign), "--quiet"]) != 0
    assert "holds no earlier tune" in capsys.readouterr().err
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]
