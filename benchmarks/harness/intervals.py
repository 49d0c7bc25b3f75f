"""A track's method rows with their paired-bootstrap 95 % intervals (``benchmarks.harness.bootstrap``).

Each row's normalized test score N_m gets ``normalized_ci95``; for each reference row r (task
arithmetic and TIES: the baselines every track compares with) the row gets ``diff_vs_{r}`` = N_m − N_r,
its interval ``diff_vs_{r}_ci95`` and ``diff_vs_{r}_excludes_zero`` (the interval does not contain 0:
the difference is outside the test sample's noise).  Further pairs (a, b) go into a's ``diffs[b]``: the
quick tracks compare every row with their best row on test that way (``against_best``), and AWD in front of
a method with the method alone (``COMBINE_PAIRS``, ``combine_comparisons``).
Every row keeps its per-example results (``correct``) so that the intervals can be drawn again.
All values are fractions (the normalized scores' units).
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from benchmarks.harness.bootstrap import RESAMPLES, SEED, paired_bootstrap

REFERENCES = ("task_arithmetic", "ties")  # the baselines each row's difference is drawn against

# (X alone, AWD in front of X): the rows of the quick tracks (MiniLM, causal-LM) that tell whether removing
# AWD's δ helps X; a track draws the pairs whose two rows it has
COMBINE_PAIRS: Tuple[Tuple[str, str], ...] = (
    ("task_arithmetic", "awd_tensor"), ("task_arithmetic", "awd_row"), ("ties", "awd_ties"),
    ("dare_ties", "awd_dare_ties"), ("della", "awd_della"), ("breadcrumbs_ties", "awd_breadcrumbs_ties"),
    ("tsv", "tsv_disentangled"), ("tsv", "awd_row_tsv"), ("iso_cts", "awd_iso_cts"), ("ace", "awd_ace"),
)


INTERVAL_FIELDS = ("normalized_ci95", "bootstrap", "diffs")  # and every diff_vs_*: what a drawing writes


def best_row(entries: Mapping[str, Mapping[str, Any]]) -> str:
    """The row with the highest test normalized score (the first of equal ones)."""
    return max(entries, key=lambda name: entries[name]["normalized_avg"])


def combine_comparisons(names: Iterable[str]) -> List[Tuple[str, str]]:
    """(AWD in front of X, X) for the ``COMBINE_PAIRS`` whose two rows are among ``names``."""
    present = set(names)
    return [(front, plain) for plain, front in COMBINE_PAIRS if plain in present and front in present]


def without_intervals(entry: Mapping[str, Any]) -> Dict[str, Any]:
    """The row without what an earlier drawing wrote (redrawn rows carry no stale comparison)."""
    return {key: value for key, value in entry.items()
            if key not in INTERVAL_FIELDS and not key.startswith("diff_vs_")}


def rows_with_intervals(entries: Mapping[str, Mapping[str, Any]], correct: Mapping[str, Mapping[str, Sequence[int]]],
                        reference: Mapping[str, Sequence[int]], references: Sequence[str] = REFERENCES,
                        compared: Sequence[Tuple[str, str]] = (), against_best: bool = False
                        ) -> Dict[str, Dict[str, Any]]:
    """``entries``: row -> its results entry (``normalized_avg``); ``correct``: row -> task -> 0/1 per
    test example; ``reference``: the fine-tunes' own results on the same examples (the normalizer);
    ``compared``: further (a, b) whose difference goes into a's ``diffs[b]``; ``against_best``: every row
    against the best row on test as well (which rows the test sample cannot separate from it)."""
    if not entries:
        return {}
    if against_best:
        best = best_row(entries)
        compared = [*compared, *((name, best) for name in entries if name != best)]
    present = [ref for ref in references if ref in correct]
    pairs = [(name, ref) for ref in present for name in correct if name != ref]
    further = [(a, b) for a, b in compared if a in correct and b in correct and b not in present]
    boot = paired_bootstrap(correct, reference, pairs + further)
    rows = {}
    for name, entry in entries.items():
        row = {**without_intervals(entry), "normalized_ci95": list(boot.normalized[name]),
               "bootstrap": {"resamples": RESAMPLES, "seed": SEED, "dropped": boot.dropped}}
        for ref in present:
            if (name, ref) in boot.differences:
                row[f"diff_vs_{ref}"] = entry["normalized_avg"] - entries[ref]["normalized_avg"]
                row[f"diff_vs_{ref}_ci95"] = list(boot.differences[(name, ref)])
                row[f"diff_vs_{ref}_excludes_zero"] = boot.excludes_zero(name, ref)
        diffs = {b: {"diff": entry["normalized_avg"] - entries[b]["normalized_avg"],
                     "ci95": list(boot.differences[(a, b)]), "excludes_zero": boot.excludes_zero(a, b)}
                 for a, b in further if a == name}
        rows[name] = {**row, **({"diffs": diffs} if diffs else {}), "correct": correct[name]}
    return rows


def run_rows_with_intervals(runs: Mapping[str, Any], reference: Mapping[str, Sequence[int]],
                            extra: Optional[Mapping[str, Tuple[Mapping[str, Any], Mapping[str, Sequence[int]]]]] = None,
                            references: Sequence[str] = REFERENCES, compared: Sequence[Tuple[str, str]] = (),
                            against_best: bool = False) -> Dict[str, Dict[str, Any]]:
    """``rows_with_intervals`` of a run's ``runner.MethodRun`` rows (their final merges' ``correct``);
    ``extra``: row -> (entry, per-example results) of rows not run by a grid (the hard track's learned ones).
    The quick tracks draw theirs with ``quick_track_rows``."""
    entries = {name: run.entry for name, run in runs.items()}
    correct = {name: run.final.scores["correct"] for name, run in runs.items()}
    for name, (entry, results) in (extra or {}).items():
        entries[name], correct[name] = entry, results
    return rows_with_intervals(entries, correct, reference, references, compared, against_best)


def quick_track_rows(entries: Mapping[str, Mapping[str, Any]], correct: Mapping[str, Mapping[str, Sequence[int]]],
                     reference: Mapping[str, Sequence[int]]) -> Dict[str, Dict[str, Any]]:
    """``rows_with_intervals`` as the quick tracks (MiniLM, causal-LM) draw them: against the references, the
    track's best row and, for AWD in front of X, X alone (``combine_comparisons``)."""
    return rows_with_intervals(entries, correct, reference, compared=combine_comparisons(entries), against_best=True)


def redrawn(results: Mapping[str, Any]) -> Dict[str, Any]:
    """A quick track's results with every row's intervals drawn again from the per-example results it keeps
    (rows' ``correct``, the fine-tunes' ``individual_correct``), against the best row and with the
    ``COMBINE_PAIRS`` it has. The resampling is seeded, so an unchanged definition redraws the same
    intervals; a comparison added since is drawn without merging or scoring anything."""
    methods = results["methods"]
    missing = sorted(name for name, row in methods.items() if "correct" not in row)
    if missing or "individual_correct" not in results:
        raise SystemExit("the results file lacks per-example results (rows " + (", ".join(missing) or "none") +
                         ", individual_correct " + ("present" if "individual_correct" in results else "missing") +
                         "): run the track again")
    entries = {name: {k: v for k, v in row.items() if k != "correct"} for name, row in methods.items()}
    rows = quick_track_rows(entries, {name: row["correct"] for name, row in methods.items()},
                            results["individual_correct"])
    return {**results, "methods": rows}


__all__ = ["COMBINE_PAIRS", "REFERENCES", "best_row", "combine_comparisons", "quick_track_rows", "redrawn",
           "rows_with_intervals", "run_rows_with_intervals", "without_intervals"]
