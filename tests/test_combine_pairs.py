"""AWD in front of X against X alone, with paired intervals, on the quick tracks: which pairs a track draws,
the redrawing of a committed file's intervals from its per-example results (``harness.intervals.redrawn``),
and the page table that shows them."""

from __future__ import annotations

import json
from typing import Any, Dict

import pytest

from benchmarks.common import RESULTS
from benchmarks.harness.intervals import COMBINE_PAIRS, REFERENCES, combine_comparisons, redrawn
from benchmarks.harness.report import combine_pair_table, difference_to


def test_a_track_draws_the_pairs_whose_two_rows_it_has() -> None:
    assert combine_comparisons(["ties", "awd_ties", "tsv", "iso_cts"]) == [("awd_ties", "ties")]
    assert combine_comparisons([]) == []
    assert len({front for _, front in COMBINE_PAIRS}) == len(COMBINE_PAIRS)  # one X per AWD row


def _track(n: int = 80) -> Dict[str, Any]:
    """Two tasks; awd_della right on 10 more examples per task than della, awd_ties on the same ones as ties."""
    def row(right: int) -> Dict[str, Any]:
        correct = {t: [1] * right + [0] * (n - right) for t in ("a", "b")}
        return {"tasks": {t: right / n for t in correct}, "normalized_avg": right / n, "params": {}, "correct": correct}

    methods = {"task_arithmetic": row(50), "ties": row(60), "awd_ties": row(60), "della": row(55),
               "awd_della": row(65)}
    return {"methods": methods, "individual_correct": {t: [1] * n for t in ("a", "b")}}


def test_redrawn_adds_awd_in_front_of_x_against_x_and_the_table_shows_it() -> None:
    results = redrawn(_track())
    rows = results["methods"]
    della = difference_to(rows["awd_della"], "della")
    assert della["diff"] == pytest.approx(10 / 80) and della["excludes_zero"]  # 10 more right per task
    assert "della" in rows["awd_della"]["diffs"]
    ties = difference_to(rows["awd_ties"], "ties")  # a reference: drawn as diff_vs_ties, not again in diffs
    assert ties["diff"] == 0 and ties["ci95"] == [0.0, 0.0] and "ties" not in rows["awd_ties"].get("diffs", {})
    table = "\n".join(combine_pair_table(rows, ("a", "b")))
    assert "| awd_della − della | **+12.5 [" in table and "| awd_ties − ties | +0.0 [0.0, 0.0] | +0.0 | +0.0 |" in table
    assert redrawn(results) == results  # seeded: drawing again changes nothing


def test_redrawn_refuses_a_file_without_per_example_results() -> None:
    track = _track()
    del track["methods"]["della"]["correct"]
    with pytest.raises(SystemExit, match="rows della"):
        redrawn(track)


def test_the_committed_llm_track_is_what_its_per_example_results_draw() -> None:
    """llm_quality.json's intervals (every row's, and AWD in front of X against X) are those its kept
    per-example results give: generated, not edited."""
    committed = json.loads((RESULTS / "llm_quality.json").read_text())
    again = redrawn(committed)
    for name, row in committed["methods"].items():
        fields = ["normalized_ci95", "diffs", *(f"diff_vs_{r}_ci95" for r in REFERENCES)]
        assert {f: row.get(f) for f in fields} == {f: again["methods"][name].get(f) for f in fields}, name
    pairs = combine_comparisons(committed["methods"])
    assert ("awd_row_tsv", "tsv") in pairs
    assert all(difference_to(committed["methods"][front], plain) is not None for front, plain in pairs)

