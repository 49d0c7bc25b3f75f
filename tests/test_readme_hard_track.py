"""The README's ``hard-track`` region (issue #27): rendered from llm_hard.json by benchmarks.readme_tables,
rows sorted by test normalized score, differences bold where their 95 % interval excludes 0, and one line
saying the track has not been run while its results file is absent."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import pytest

from benchmarks import readme_tables

TASKS = ("a", "b")
GRID_ROWS = ("task_arithmetic", "ties", "dare_ties", "della", "breadcrumbs_ties", "awd_tensor", "awd_row", "awd_ties",
             "awd_dare_ties", "awd_della", "awd_breadcrumbs_ties", "tsv", "awd_tsv", "wudi_adam", "wudi_exact",
             "awd_wudi", "iso_c", "awd_iso_c", "iso_cts", "awd_iso_cts", "ace", "awd_ace")
LEARNED_ROWS = ("adamerging", "awd_adamerging", "layerwise_likelihood", "tune_methods")


def _row(score: float, params: Dict[str, Any], ties: Optional[Sequence[float]] = None,
         task_arithmetic: Optional[Sequence[float]] = None, **extra: Any) -> Dict[str, Any]:
    """A methods entry; ``ties``/``task_arithmetic``: (difference, low, high) to that reference."""
    row: Dict[str, Any] = {"tasks": {t: score for t in TASKS}, "normalized_avg": score,
                           "normalized_ci95": [score - 0.02, score + 0.02], "params": params, "merge_seconds": 1.0,
                           "correct": {t: [1, 0] for t in TASKS}, **extra}
    for ref, diff in (("ties", ties), ("task_arithmetic", task_arithmetic)):
        if diff is not None:
            row[f"diff_vs_{ref}"] = diff[0]
            row[f"diff_vs_{ref}_ci95"] = [diff[1], diff[2]]
            row[f"diff_vs_{ref}_excludes_zero"] = diff[1] > 0 or diff[2] < 0
    return row


def _results(methods: Dict[str, Any], k_sweep: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    return {"tasks": {t: {"kind": "classification", "train": 100, "validation": 128, "test": 400,
                          "tau_norm_ratio": 0.01, "bf16_roundtrip_error": 0.05} for t in TASKS},
            "individual": {t: 0.9 for t in TASKS},
            "pretrained": {"tasks": {t: 0.3 for t in TASKS}, "normalized_avg": 0.333},
            "methods": methods, "k_sweep": {} if k_sweep is None else k_sweep,
            "settings": {"seconds": 7200, "seconds_merging": 3000, "seconds_scoring": 4000, "code": "codeX"}}


def _sweep(k: int, tasks: Sequence[str], scores: Dict[str, float]) -> Dict[str, Any]:
    rows = {"task_arithmetic": "task_arithmetic", "ties": "ties", "best_awd": "awd_row"}
    return {m: {"row": rows[m], "tasks": list(tasks), "normalized_avg": v, "avg": v, "params": {}}
            for m, v in scores.items()}


SYNTHETIC = _results(
    {"task_arithmetic": _row(0.80, {"merge_method": "task_arithmetic", "lambda": 0.5, "weight": 1.0},
                             ties=(-0.05, -0.08, -0.02)),
     "ties": _row(0.85, {"merge_method": "ties", "lambda": 1.0, "density": 0.5, "weight": 1.0},
                  task_arithmetic=(0.05, 0.02, 0.08)),
     "awd_row": _row(0.86, {"merge_method": "awd", "scope": "row", "alpha": 0.01, "lambda": 1.0, "weight": 1.0},
                     ties=(0.01, -0.01, 0.03), task_arithmetic=(0.06, 0.03, 0.09)),
     "awd_adamerging": _row(0.83, {"merge_method": "awd", "scope": "row", "alpha": 0.01, "layerwise": "entropy",
                                   "steps": 100, "lr": 0.001}, ties=(-0.02, -0.05, 0.01),
                            task_arithmetic=(0.03, 0.0, 0.06)),
     "tune_methods": _row(0.86, {"merge_method": "awd", "scope": "row", "alpha": 0.01, "lambda": 1.0, "weight": 1.0},
                          ties=(0.01, -0.01, 0.03), task_arithmetic=(0.06, 0.03, 0.09), chosen_row="awd_row")},
    {"2": _sweep(2, TASKS[:1], {"task_arithmetic": 0.9, "ties": 0.92, "best_awd": 0.93}),
     "8": _sweep(8, TASKS, {"task_arithmetic": 0.80, "ties": 0.85, "best_awd": 0.86})})


def _render(monkeypatch: pytest.MonkeyPatch, results: Optional[Dict[str, Any]]) -> str:
    monkeypatch.setattr(readme_tables, "_hard_results", lambda: results)
    return readme_tables.hard_track()


def _table_rows(text: str) -> List[List[str]]:
    lines = [line for line in text.splitlines() if line.startswith("| ")][2:]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]


def test_not_run_yet_is_one_line_without_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(monkeypatch, None)
    assert text.count("\n") == 1 and "has not been run" in text
    assert "python -m benchmarks.llm_hard.run" in text and "./run.sh llm-hard" in text
    assert "llm_hard.md" not in text  # no link to a page that does not exist yet


def test_rows_are_sorted_by_normalized_score(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _table_rows(_render(monkeypatch, SYNTHETIC))
    assert [row[0] for row in rows] == ["`awd_row`: `awd`, `scope: row`", "`tune_methods` → `awd_row`", "`ties`",
                                        "`awd_adamerging`: `awd`, `scope: row`, tune `--layerwise --objective entropy`",
                                        "`task_arithmetic`"]
    assert rows[0][1] == "[86.0](benchmarks/results/llm_hard.md) [84.0, 88.0]"


def test_differences_are_bold_where_the_interval_excludes_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {row[0].split("`")[1]: row for row in _table_rows(_render(monkeypatch, SYNTHETIC))}
    assert rows["awd_row"][2] == "+1.0 [-1.0, 3.0]"            # vs ties: inside the noise
    assert rows["awd_row"][3] == "**+6.0 [3.0, 9.0]**"         # vs task_arithmetic: excludes 0
    assert rows["task_arithmetic"][2] == "**-5.0 [-8.0, -2.0]**" and rows["task_arithmetic"][3] == "—"
    assert rows["ties"][2] == "—" and rows["ties"][3] == "**+5.0 [2.0, 8.0]**"
    assert rows["awd_adamerging"][3] == "+3.0 [0.0, 6.0]"     # an interval touching 0 does not exclude it


def test_chosen_parameters_and_the_run_line(monkeypatch: pytest.MonkeyPatch) -> None:
    text = _render(monkeypatch, SYNTHETIC)
    rows = {row[0].split("`")[1]: row for row in _table_rows(text)}
    assert rows["ties"][4] == "λ 1.0, density 0.5"
    assert rows["tune_methods"][4] == "λ 1.0, α 0.01"
    assert rows["awd_adamerging"][4] == "α 0.01, λ per task and block learned (100 steps)"
    last = text.splitlines()[-1]
    assert "7,200 s (2.0 h" in last and "`codeX`" in last and "400 test lines per task" in last
    assert "K = 2/8: task_arithmetic 90.0/80.0; ties 92.0/85.0; best_awd (`awd_row`) 93.0/86.0" in last


def test_the_full_track_fits_the_readme_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    methods = {name: _row(0.5 + i / 100, {"merge_method": name.split("_")[0], "lambda": 1.0}, ties=(0.0, -0.1, 0.1),
                          task_arithmetic=(0.0, -0.1, 0.1)) for i, name in enumerate(GRID_ROWS + LEARNED_ROWS)}
    text = _render(monkeypatch, _results(methods))
    assert len(_table_rows(text)) == len(methods) and text.count("\n") <= 35
    readme = readme_tables.README.read_text()
    current = readme_tables.REGION.search(readme[readme.index("<!-- generated: hard-track -->"):]).group("body")
    assert readme.count("\n") - current.count("\n") + text.count("\n") <= 350


def test_the_binomial_noise_sentence_says_why_it_is_no_interval() -> None:
    """A track whose results file has no per-example results gets the binomial estimate, saying so (the
    bootstrap sentence for files with intervals: tests/test_quality_results.py)."""
    sentence = readme_tables._noise_sentence("T", {"x": (90.0, 1.0, 2.0)}, {"a": 400})
    assert "predates per-example results" in sentence and "not a measured interval" in sentence