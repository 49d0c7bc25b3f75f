"""The hard LLM track's pieces that run without its models (issue #27): the generated tasks, and a
fine-tune killed mid-way resuming to exactly the weights of an uninterrupted one."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from benchmarks.harness.finetune import train_steps
from benchmarks.llm_hard.tasks import GENERATIVE, HARD_TASK_NAMES, TEST_SIZE, VALIDATION_SIZE, hard_task_splits, \
    number_in_words


@pytest.mark.parametrize("number, words", [
    (0, "zero"), (15, "fifteen"), (40, "forty"), (47, "forty-seven"), (100, "one hundred"),
    (101, "one hundred one"), (999, "nine hundred ninety-nine"), (1000, "one thousand"),
    (1010, "one thousand ten"), (4721, "four thousand seven hundred twenty-one"),
    (9999, "nine thousand nine hundred ninety-nine"),
])
def test_number_in_words(number, words):
    assert number_in_words(number) == words


@pytest.mark.parametrize("task", GENERATIVE)
def test_generated_tasks_have_disjoint_deterministic_splits(task):
    splits = hard_task_splits(task, tokenizer=None)
    again = hard_task_splits(task, tokenizer=None)
    assert (len(splits.test), len(splits.validation)) == (TEST_SIZE, VALIDATION_SIZE) and len(splits.train) > 3000
    assert splits == again
    prompts = [{e.prompt for e in part} for part in (splits.train, splits.validation, splits.test)]
    assert not (prompts[0] & prompts[1] or prompts[0] & prompts[2] or prompts[1] & prompts[2])


def test_subtraction_answers_overlap_arithmetic_answers():
    """The interference case: the same answer words for a different map of same-shaped prompts."""
    answers = {task: {e.answer for e in hard_task_splits(task, None).test} for task in ("arithmetic", "subtraction")}
    assert len(answers["arithmetic"] & answers["subtraction"]) > 20
    assert set(HARD_TASK_NAMES) >= set(GENERATIVE) and len(HARD_TASK_NAMES) == 8


class Killed(Exception):
    pass


def _train(tmp_path, kill_at=None, checkpoint=True, learning_rate=0.05, inputs=None):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    data = torch.randn(32, 4)
    target = torch.randn(32, 3)
    calls = []

    def batch_loss(indices):
        calls.append(len(calls))
        if kill_at is not None and len(calls) == kill_at:
            raise Killed()
        return torch.nn.functional.mse_loss(model(data[indices]), target[indices])

    settings = SimpleNamespace(steps=10, batch_size=4, learning_rate=learning_rate, weight_decay=0.01, seed=3,
                               log_every=5)
    path = tmp_path / "state.pt" if checkpoint else None
    seconds, losses = train_steps(model, 32, settings, batch_loss, "toy", checkpoint=path, checkpoint_every=3,
                                  inputs=inputs)
    return model, losses, len(calls)


def test_a_killed_fine_tune_resumes_to_the_uninterrupted_weights(tmp_path):
    straight, straight_losses, _ = _train(tmp_path / "a", checkpoint=False)
    with pytest.raises(Killed):
        _train(tmp_path / "b", kill_at=8)  # killed in step 8: the checkpoint of step 6 is on disk
    assert (tmp_path / "b" / "state.pt").exists()
    resumed, resumed_losses, steps_run = _train(tmp_path / "b")
    assert steps_run == 4  # steps 7 to 10 only
    assert torch.equal(resumed.weight, straight.weight) and torch.equal(resumed.bias, straight.bias)
    assert resumed_losses == straight_losses


def test_k_subsets_are_fixed_and_nested_in_the_task_order():
    from benchmarks.llm_hard.tasks import k_subset

    for k in (2, 4, 8):
        subset = k_subset(k)
        assert len(subset) == k and subset == k_subset(k)
        assert list(subset) == [t for t in HARD_TASK_NAMES if t in subset]
    assert k_subset(8) == HARD_TASK_NAMES
    with pytest.raises(ValueError):
        k_subset(9)


def _fake_runs(tasks, n=50):
    """Three rows with per-example results: always right, right on even examples, never right."""
    from benchmarks.harness.merging import MergeSpec
    from benchmarks.harness.selection import GridPoint

    def run(name, pattern):
        correct = {t: [pattern(i) for i in range(n)] for t in tasks}
        accuracy = {t: sum(v) / n for t, v in correct.items()}
        spec = MergeSpec(name, {"lambda": 0.5}, {"weight": 1.0})
        point = GridPoint(spec, accuracy, 0.5, 0.5, 1.0)
        entry = {"tasks": accuracy, "avg": sum(accuracy.values()) / len(tasks),
                 "normalized_avg": sum(accuracy.values()) / len(tasks), "params": {"merge_method": name, **spec.label()},
                 "merge_seconds": 1.0}
        return SimpleNamespace(final=SimpleNamespace(scores={"correct": correct}), entry=entry, chosen=point,
                               grid=SimpleNamespace(lambdas=(0.5,)), points=[point])

    return {"task_arithmetic": run("task_arithmetic", lambda i: i % 2), "ties": run("ties", lambda i: 1),
            "awd_row": run("awd", lambda i: 0)}


def test_results_rows_have_the_issue_layout_and_intervals(tmp_path):
    from benchmarks.llm_hard.report import write_markdown
    from benchmarks.llm_hard.run import method_rows

    tasks = ("a", "b")
    rows = method_rows(_fake_runs(tasks), {t: [1] * 50 for t in tasks})
    for name, row in rows.items():
        assert {"tasks", "normalized_avg", "normalized_ci95", "params", "merge_seconds"} <= set(row)
    # always right vs right on half the examples: the interval of the difference excludes 0 ...
    assert rows["ties"]["diff_vs_task_arithmetic_ci95"][0] > 0 and rows["ties"]["diff_vs_task_arithmetic_excludes_zero"]
    assert rows["awd_row"]["diff_vs_ties_ci95"] == [-1.0, -1.0] and "diff_vs_ties" not in rows["ties"]
    assert rows["ties"]["normalized_ci95"] == [1.0, 1.0]
    low, high = rows["task_arithmetic"]["normalized_ci95"]
    assert low < 0.5 < high
    results = {"tasks": {t: {"kind": "classification", "train": 1, "validation": 1, "test": 50, "tau_norm_ratio": 0.1,
                             "bf16_roundtrip_error": 0.05, "finetune": {"seconds": 3}} for t in tasks},
               "individual": {t: 1.0 for t in tasks}, "pretrained": {"tasks": {t: 0.0 for t in tasks},
                                                                    "normalized_avg": 0.0},
               "methods": rows, "k_sweep": {}, "settings": {"code": "x", "seconds": 1, "threads": 2}}
    write_markdown(results, tmp_path / "hard.md")
    text = (tmp_path / "hard.md").read_text()
    assert "| ties | 100.0 [100.0, 100.0] | **+50.0" in text


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    with pytest.raises(Killed):
        _train(tmp_path, kill_at=8)
    other, _, steps_run = _train(tmp_path, learning_rate=0.01)
    fresh, _, _ = _train(tmp_path / "fresh", checkpoint=False, learning_rate=0.01)
    assert steps_run == 10 and torch.equal(other.weight, fresh.weight)


def test_a_checkpoint_of_other_inputs_is_not_resumed(tmp_path, capsys):
    """The checkpoint is keyed by the inputs fingerprint too: same settings, another base → starts over."""
    inputs = {"settings": {}, "base_sha256": "a" * 64, "data_sha256": "d" * 64, "train_examples": 32}
    with pytest.raises(Killed):
        _train(tmp_path, kill_at=8, inputs=inputs)
    other, _, steps_run = _train(tmp_path, inputs={**inputs, "base_sha256": "b" * 64})
    fresh, _, _ = _train(tmp_path / "fresh", checkpoint=False)
    assert steps_run == 10 and torch.equal(other.weight, fresh.weight)
    assert "the checkpoint was written with another base model (its weight files changed); starting over" in \
        capsys.readouterr().out
    with pytest.raises(Killed):
        _train(tmp_path, kill_at=8, inputs=inputs)
    assert _train(tmp_path, inputs=inputs)[2] == 4  # the same inputs resume


def test_a_checkpoint_from_before_inputs_were_recorded_is_resumed_once(tmp_path, capsys):
    with pytest.raises(Killed):
        _train(tmp_path, kill_at=8)
    _, _, steps_run = _train(tmp_path, inputs={"base_sha256": "a" * 64})
    assert steps_run == 4 and "written before its inputs were recorded; resumed as is" in capsys.readouterr().out


def test_a_cached_fine_tune_of_other_settings_is_trained_again(tmp_path, capsys):
    import json

    from benchmarks.harness.finetune import ensure_finetunes

    built = []
    inputs = {"settings": {"lr": 2}, "base_sha256": "a", "data_sha256": "d", "train_examples": 1}

    def build(task, folder, inputs):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "done.json").write_text(json.dumps({"seconds": 1, "settings": {"lr": 2}, "inputs": inputs}))
        built.append(task)

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "done.json").write_text(json.dumps({"seconds": 1, "settings": {"lr": 1}}))
    ensure_finetunes(["a"], tmp_path, "done.json", build, lambda task: inputs)
    ensure_finetunes(["a"], tmp_path, "done.json", build, lambda task: inputs)
    assert built == ["a"]
    assert "a: the cached fine-tune was trained with other settings: training again" in capsys.readouterr().out


@pytest.mark.parametrize("peak, start, expected_scored", [
    (0.5, 0.5, [0.3, 0.5, 0.7]),            # the start is the best: its two neighbours only
    (0.2, 0.5, [0.2, 0.3, 0.5, 0.7]),       # climbs down to the grid's end
    (1.0, 0.5, [0.3, 0.5, 0.7, 1.0]),       # climbs up to the grid's end
    (0.7, 0.2, [0.2, 0.3, 0.5, 0.7, 1.0]),  # from an end: one neighbour, then up until the score falls
])
def test_the_hill_climb_finds_the_best_grid_point_of_a_unimodal_curve(peak, start, expected_scored):
    from benchmarks.harness.selection import climb

    grid = (0.2, 0.3, 0.5, 0.7, 1.0)
    calls = []

    def score(lam):
        calls.append(lam)
        return -abs(lam - peak)

    scored = climb(score, grid, start)
    assert scored == expected_scored and sorted(calls) == scored  # each λ scored once
    assert max(scored, key=score) == peak


def test_the_hill_climb_keeps_the_lower_lambda_on_ties():
    from benchmarks.harness.selection import climb

    assert climb(lambda lam: 1.0, (0.5, 1.0, 1.5, 2.0), 1.0) == [0.5, 1.0, 1.5]


def test_a_resumed_run_sums_the_seconds_of_its_invocations():
    """Each process records its seconds beside its records; a run killed and resumed sums them, and
    another run's (other fine-tunes, other code: another fingerprint) are not counted."""
    from benchmarks.harness.experiment import INVOCATION_PREFIX, recorded_seconds

    records = {f"{INVOCATION_PREFIX}1-1/fpA": {"seconds": 100.0, "seconds_merging": 40.0, "seconds_scoring": 50.0},
               f"{INVOCATION_PREFIX}2-2/fpA": {"seconds": 30.0, "seconds_merging": 10.0, "seconds_scoring": 15.0},
               f"{INVOCATION_PREFIX}2-2/fpK2": {"seconds": 5.0, "seconds_merging": 2.0, "seconds_scoring": 2.0},
               f"{INVOCATION_PREFIX}0-0/fpOld": {"seconds": 999.0, "seconds_merging": 9.0, "seconds_scoring": 9.0},
               "sweep/x/0.5/validation/fpA": {"t": 0.5}}
    assert recorded_seconds(records, ["fpA", "fpK2"]) == {"seconds": 135.0, "seconds_merging": 52.0,
                                                         "seconds_scoring": 67.0, "invocations": 2}


def test_a_lambda_at_the_grids_end_is_marked():
    from benchmarks.llm_hard.report import chosen_lambda

    results = {"methods": {"a": {"params": {"lambda": 0.05}}, "b": {"params": {"lambda": 0.2}},
                           "c": {"params": {}, "layerwise": {}}},
               "validation_grid": {"a": {"lambdas": [0.05, 0.1, 0.2, 0.3]}, "b": {"lambdas": [0.05, 0.1, 0.2, 0.3]}}}
    assert chosen_lambda(results, "a") == "0.05 (grid edge)"
    assert chosen_lambda(results, "b") == "0.2"
    assert chosen_lambda(results, "c") == "learned"


def test_a_target_with_a_margin_needs_the_interval_above_zero():
    from benchmarks.llm_hard.targets import _comparison

    methods = {"a": {"normalized_avg": 0.80, "diff_vs_ties": 0.04, "diff_vs_ties_ci95": [-0.01, 0.09],
                     "diffs": {"b": {"diff": 0.04, "ci95": [0.01, 0.07]}}},
               "b": {"normalized_avg": 0.76}, "ties": {"normalized_avg": 0.76}}
    assert not _comparison(methods, "a", "ties", 0.03, "")["met"]       # +4 but the interval reaches below 0
    assert _comparison(methods, "a", "b", 0.03, "")["met"]              # +4, interval above 0
    assert not _comparison(methods, "a", "b", 0.05, "")["met"]          # below the margin
    assert _comparison(methods, "a", "ties", 0.0, "")["met"]            # no margin: the point estimate decides
