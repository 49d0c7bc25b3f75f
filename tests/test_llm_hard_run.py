"""The hard track's whole run (``benchmarks.llm_hard.run.main``) end to end on tiny models: every phase the
real run reaches only after hours (grid rows, the learned rows, the method chooser, the K sweep, the
bootstrap, the results file, its page and plot) runs once here, on three tiny synthetic fine-tunes with
two-way choice tasks, and a second run answers from the records without merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mergekit_awd.testing.synthetic import VOCAB_WORDS, build_family

TASKS = ("t0", "t1", "t2")


def _splits(name, tokenizer):
    """Two-way choice lines over the tiny tokenizer's words (labels alternate; disjoint splits)."""
    from benchmarks.llm.tasks import LMSplits
    from mergekit_awd.tools.lm_scoring import ChoiceExample

    shift = TASKS.index(name)
    w = VOCAB_WORDS

    def lines(start, count):
        return tuple(ChoiceExample(f"{w[(i + shift) % 30]} {w[(3 * i + shift) % 30]}", (f" {w[30]}", f" {w[31]}"),
                                   (i + shift) % 2) for i in range(start, start + count))

    return LMSplits(train=lines(0, 4), validation=lines(4, 12), test=lines(16, 24))


def _grids(registered):
    from benchmarks.llm_hard.grids import _grid

    return [_grid("task_arithmetic", "task_arithmetic", {}, {}, (0.5, 1.0)),
            _grid("ties", "ties", {}, {"density": 0.5}, (0.5, 1.0)),
            _grid("awd_row", "awd", {"scope": "row", "alpha": 0.01}, {}, (0.5, 1.0))]


@pytest.fixture
def tiny_track(tmp_path, monkeypatch):
    """The run's inputs replaced by tiny ones; returns the results file's path."""
    import benchmarks.llm.base_model as base_model
    import benchmarks.llm_hard.adamerging as adamerging
    import benchmarks.llm_hard.experiment as experiment
    import benchmarks.llm_hard.grids as grids
    import benchmarks.llm_hard.models as models
    import benchmarks.llm_hard.run as run
    import benchmarks.llm_hard.tasks as tasks
    from benchmarks.llm.finetune import DONE_MARKER

    paths = build_family(tmp_path / "family", n_models=len(TASKS), seed=11)
    folders = dict(zip(TASKS, paths[1:]))
    for task, folder in folders.items():
        (folder / DONE_MARKER).write_text(json.dumps({"task": task, "seconds": 1.0}))
    monkeypatch.setattr(base_model, "ensure_base_model", lambda: paths[0])
    monkeypatch.setattr(models, "ensure_hard_finetunes", lambda: folders)
    monkeypatch.setattr(tasks, "HARD_TASK_NAMES", TASKS)
    monkeypatch.setattr(tasks, "hard_task_splits", _splits)
    monkeypatch.setattr(experiment, "hard_task_splits", _splits)
    monkeypatch.setattr(grids, "hard_grids", _grids)
    monkeypatch.setattr(grids, "K_SWEEP_METHODS", ("task_arithmetic", "ties", "best_awd"))
    monkeypatch.setattr(adamerging, "STEPS", 2)
    monkeypatch.setattr(run, "K_VALUES", (2, 3))
    monkeypatch.setattr(run, "MERGES_DIR", tmp_path / "merges")
    monkeypatch.setattr(run, "RESULTS_JSON", tmp_path / "results" / "llm_hard.json")
    (tmp_path / "results").mkdir()
    return tmp_path / "results" / "llm_hard.json"


def test_the_whole_run_writes_the_issue_layout_and_resumes_without_merging(tiny_track, monkeypatch, in_process_cli):
    import benchmarks.harness.experiment as harness_experiment
    from benchmarks.llm_hard.run import main

    main(["--no-setup"])
    results = json.loads(tiny_track.read_text())
    assert set(results["tasks"]) == set(TASKS)
    for entry in results["tasks"].values():
        assert {"kind", "train", "validation", "test", "tau_norm_ratio", "bf16_roundtrip_error"} <= set(entry)
        assert entry["test"] == 24 and entry["validation"] == 12 and 0 < entry["tau_norm_ratio"]
    assert set(results["individual"]) == set(TASKS) and set(results["pretrained"]["tasks"]) == set(TASKS)
    rows = results["methods"]
    assert {"task_arithmetic", "ties", "awd_row", "adamerging", "awd_adamerging", "layerwise_likelihood",
            "layerwise_tsv", "tune_methods"} <= set(rows)
    for name, row in rows.items():
        assert {"tasks", "normalized_avg", "normalized_ci95", "params", "merge_seconds", "correct"} <= set(row), name
        low, high = row["normalized_ci95"]
        assert low <= row["normalized_avg"] <= high, name
        assert all(len(row["correct"][t]) == 24 for t in TASKS), name
        for reference in ("task_arithmetic", "ties"):
            assert (f"diff_vs_{reference}_ci95" in row) == (name != reference), (name, reference)
    assert rows["tune_methods"]["chosen_row"] in ("task_arithmetic", "ties", "awd_row")
    assert rows["awd_adamerging"]["layerwise"]["groups"] and rows["adamerging"]["params"]["layerwise"] == "entropy"
    assert set(rows["awd_adamerging"]["diffs"]) == {"adamerging", "awd_row"}
    chosen = rows["tune_methods"]["chosen_row"]  # a reference's difference is the row's diff_vs_{reference}
    assert set(rows["layerwise_likelihood"].get("diffs", {})) == ({chosen} - {"task_arithmetic", "ties"})
    likelihood = [t for t in results["targets"] if t.get("a") == "layerwise_likelihood"]
    assert len(likelihood) == 1 and likelihood[0]["b"] == chosen
    # no tsv grid row here: layerwise_tsv is compared with the best data-free row alone
    assert rows["layerwise_tsv"]["params"]["merge_method"] == "tsv"
    assert set(rows["layerwise_tsv"].get("diffs", {})) == ({chosen} - {"task_arithmetic", "ties"})
    assert [t["b"] for t in results["targets"] if t.get("a") == "layerwise_tsv"] == [chosen]
    targets = {t["target"]: t for t in results["targets"]}
    assert targets["headroom: task_arithmetic ≤ 90% normalized"]["measured"] == rows["task_arithmetic"]["normalized_avg"]
    assert targets["awd_adamerging ≥ adamerging (the AWD paper's claim)"]["interval"] == \
        rows["awd_adamerging"]["diffs"]["adamerging"]["ci95"]
    assert set(results["k_sweep"]) == {"2", "3"}
    assert set(results["k_sweep"]["2"]) == {"task_arithmetic", "ties", "best_awd"}
    assert results["k_sweep"]["2"]["best_awd"]["row"] == "awd_row" and len(results["k_sweep"]["2"]["ties"]["tasks"]) == 2
    settings = results["settings"]
    assert {"seconds", "seconds_merging", "seconds_scoring", "code"} <= set(settings)
    # the tiny models score in well under a second: the scoring seconds may round to 0
    assert settings["seconds"] >= settings["seconds_merging"] > 0 and settings["seconds_scoring"] >= 0, settings
    page = tiny_track.with_suffix(".md").read_text()
    assert "awd_adamerging" in page and "tune_methods" in page and "## Targets" in page
    assert tiny_track.with_name("llm_hard_k_sweep.png").stat().st_size > 0

    def no_merge(*args, **kwargs):
        raise AssertionError("a resumed run merged again")

    monkeypatch.setattr(harness_experiment, "run_cli_merge", no_merge)
    again = main(["--no-setup"])
    assert {name: row["normalized_avg"] for name, row in again["methods"].items()} == \
        {name: row["normalized_avg"] for name, row in rows.items()}
    assert again["settings"]["seconds_this_invocation_merging"] == 0


def test_a_learned_rows_record_key_changes_with_its_definition(monkeypatch):
    """A learned row's cached record is keyed by what defines it: a changed objective or parameter is learned again."""
    from benchmarks.llm_hard import adamerging

    before = adamerging.record_key("layerwise_tsv")
    monkeypatch.setitem(adamerging.ROWS, "layerwise_tsv", ("tsv", {}, "entropy"))
    assert adamerging.record_key("layerwise_tsv") != before
    changed = adamerging.record_key("layerwise_tsv")
    monkeypatch.setitem(adamerging.ROWS, "layerwise_tsv", ("tsv", {"lambda": 0.5}, "entropy"))
    assert adamerging.record_key("layerwise_tsv") != changed
    monkeypatch.setattr(adamerging, "STEPS", 7)
    assert "/7/" in adamerging.record_key("layerwise_tsv")
