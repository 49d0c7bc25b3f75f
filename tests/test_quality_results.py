"""One results file per track (issue #27): the MiniLM run computes every grid into quality.json (layout 2),
the README generator reads that file alone, its page renders every row, and the LLM track's ``--update``
refuses rows of another code version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pytest

from benchmarks import readme_tables
from benchmarks.quality import results_files
from benchmarks.quality.results_files import LAYOUT

# the grids of the per-grid runs (the removed benchmarks.quality.peers' PEER_GRIDS, COMBINE_GRIDS,
# TUNED_GRIDS, ACE_GRIDS) and the earlier quality.run's: every one is a row of the single run
EARLIER_GRIDS = {
    "task_arithmetic", "ties", "dare_ties", "della", "breadcrumbs_ties", "awd_tensor", "awd_model", "tsv",
    "tsv_disentangled", "wudi_adam", "wudi_exact", "iso_c", "iso_cts", "iso_cts_fraction", "ace", "ace_uncentred",
    "ace_mean_covariance", "ace_eps", "awd_ace", "awd_row", "awd_ties", "awd_dare_ties", "awd_della",
    "awd_breadcrumbs_ties", "awd_row_tsv", "awd_iso_cts",
}
REGISTERED = ["task_arithmetic", "ties", "dare_ties", "della", "breadcrumbs_ties", "awd", "tsv", "wudi", "iso_c",
              "iso_cts", "ace"]


def _row(normalized: float) -> Dict[str, Any]:
    return {"tasks": {"a": 0.7, "b": 0.8}, "avg": 0.75, "normalized_avg": normalized,
            "validation_normalized_avg": normalized, "merge_seconds": 1.0,
            "params": {"merge_method": "iso_cts", "lambda": 3.0, "select": "matrices"}}


def _minilm(layout: int, methods: Dict[str, Any]) -> Dict[str, Any]:
    return {**({"layout": layout} if layout > 1 else {}), "individual": {"a": 0.8, "b": 0.9},
            "splits": {"a": {"test": {"size": 100}}, "b": {"test": {"size": 100}}}, "methods": methods,
            "settings": {"merge_code": "code-x", "seconds": 10, "threads": 2}}


def _fake_results(monkeypatch: pytest.MonkeyPatch, files: Dict[str, Dict[str, Any]]) -> None:
    """``readme_tables`` reads ``files`` for these stems and the committed files for the others."""
    real = readme_tables._results
    monkeypatch.setattr(readme_tables, "_results", lambda stem: files[stem] if stem in files else real(stem))


def test_rows_come_from_quality_json_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    files = {"quality": _minilm(LAYOUT, {"iso_cts": _row(0.9), "ties": _row(0.8)})}
    _fake_results(monkeypatch, files)
    assert readme_tables.minilm_entry("iso_cts") == ("quality", files["quality"]["methods"]["iso_cts"])
    assert readme_tables.minilm_entry("ace") is None
    table = readme_tables.which_method()
    assert "**[90.0](benchmarks/results/quality.md)**" in table and "[80.0](benchmarks/results/quality.md)" in table
    assert "quality_" not in table  # no per-grid file is linked
    assert "MiniLM λ 3.0, select matrices" in table


def test_the_committed_file_holds_every_row_of_the_track() -> None:
    results = results_files.load()
    assert results_files.is_single_file(results) and results["settings"]["seconds"] > 0
    assert not results_files.is_single_file({"methods": {}})
    assert not list(results_files.RESULTS.glob("quality_peers.*"))  # the per-grid files were retired


def test_the_single_run_has_every_earlier_grid_once() -> None:
    from benchmarks.quality.grids import all_grids

    names = [g.name for g in all_grids(REGISTERED)]
    assert len(names) == len(set(names))
    assert EARLIER_GRIDS | set(results_files.load()["methods"]) == set(names)


def test_grids_option_selects_in_run_order_and_rejects_unknown_names() -> None:
    from benchmarks.quality.grids import all_grids
    from benchmarks.quality.run import select_grids

    grids = all_grids(REGISTERED)
    assert select_grids(grids, None) == grids
    assert [g.name for g in select_grids(grids, ["iso_cts", "ties"])] == ["ties", "iso_cts"]
    with pytest.raises(SystemExit, match="unknown nope"):
        select_grids(grids, ["ties", "nope"])


def test_quality_page_renders_every_row_of_a_single_file(tmp_path: Path) -> None:
    from benchmarks.quality.report import grids_markdown, write_markdown

    results = results_files.load()
    write_markdown(results, tmp_path / "quality.md")
    page = (tmp_path / "quality.md").read_text()
    assert "every row of the track, from this one run" in page and results["settings"]["merge_code"] in page
    assert all(f"| {name} |" in page for name in results["methods"])
    if {"awd_iso_cts", "iso_cts"} <= set(results["methods"]):
        assert "| awd_iso_cts − iso_cts |" in page
    subset = {**results, "methods": {k: results["methods"][k] for k in ("task_arithmetic", "awd_tensor")}}
    lines = grids_markdown({k: subset[k] for k in ("individual", "methods", "validation_grid", "settings")})
    assert "the grids named in its command only" in "\n".join(lines)


def test_llm_update_refuses_another_code_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.llm.paths as llm_paths
    from benchmarks.llm.run import _require_committed_code

    path = tmp_path / "llm_quality.json"
    path.write_text(json.dumps({"settings": {"merge_code": "code-a"}, "methods": {"ties": {"correct": {"t": [1, 0]}}}}))
    monkeypatch.setattr(llm_paths, "RESULTS_JSON", path)
    _require_committed_code("code-a")
    with pytest.raises(SystemExit, match="code version is code-b, llm_quality.json's rows are from code-a"):
        _require_committed_code("code-b")
    # a committed row without per-example results: its intervals could not be drawn again with the new rows
    path.write_text(json.dumps({"settings": {"merge_code": "code-a"}, "methods": {"ties": {"normalized_avg": 0.9}}}))
    with pytest.raises(SystemExit, match="rows ties have no per-example results"):
        _require_committed_code("code-a")


def test_rows_with_intervals_are_shown_with_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """Once a track's rows carry paired-bootstrap intervals (every track keeps per-example results), the
    which-method table shows them and says which rows its best row cannot be told apart from; the docs
    page's track table shows each row's interval and its differences to ties and task_arithmetic."""
    from benchmarks.harness.intervals import rows_with_intervals

    n = 100
    reference = {"a": [1] * n, "b": [1] * n}
    correct = {"iso_cts": {"a": [1] * 90 + [0] * 10, "b": [1] * 90 + [0] * 10},
               "tsv": {"a": [1] * 89 + [0] * 11, "b": [1] * 89 + [0] * 11},   # one example apart: noise
               "ties": {"a": [1] * 60 + [0] * 40, "b": [1] * 60 + [0] * 40},
               "task_arithmetic": {"a": [1] * 50 + [0] * 50, "b": [1] * 50 + [0] * 50}}
    entries = {name: {**_row(sum(v["a"]) / n), "tasks": {t: sum(x) / n for t, x in v.items()}}
               for name, v in correct.items()}
    methods = rows_with_intervals(entries, correct, reference, against_best=True)
    files = {"quality": {**_minilm(LAYOUT, methods), "individual": {"a": 1.0, "b": 1.0}}}
    _fake_results(monkeypatch, files)
    table = readme_tables.which_method()
    low, high = methods["iso_cts"]["normalized_ci95"]
    assert f"**[90.0](benchmarks/results/quality.md) [{100 * low:.1f}, {100 * high:.1f}]**" in table
    sentence = next(line for line in table.splitlines() if line.startswith("**Noise, MiniLM**"))
    assert "paired bootstrap" in sentence and "best row on test is `iso_cts`" in sentence
    assert "tsv (89.0, -1.0 [" in sentence and "ties (" not in sentence  # ties is 30 points behind: separable
    docs = readme_tables.minilm_track()
    assert "| `ties` | 60.0 [" in docs and "| **+10.0 [" in docs and "excludes 0 (paired bootstrap" in docs
