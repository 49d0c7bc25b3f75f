"""``benchmarks.harness.bootstrap``: paired bootstrap intervals against closed forms."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.harness.bootstrap import paired_bootstrap  # noqa: E402


def test_difference_of_two_constant_predictors_has_the_binomial_interval():
    """A is always right, B right on a fixed share p: N_A − N_B = 1 − p per resample of a binomial
    mean, so the 95 % interval is (1 − p) ± 1.96 √(p(1 − p)/n) (normal approximation, n = 2000)."""
    n, p = 2000, 0.7
    reference = {"t": np.ones(n)}
    b = np.zeros(n)
    b[: int(p * n)] = 1
    result = paired_bootstrap({"a": {"t": np.ones(n)}, "b": {"t": b}}, reference, pairs=[("a", "b")],
                              resamples=4000)
    half = 1.96 * np.sqrt(p * (1 - p) / n)
    low, high = result.differences[("a", "b")]
    assert low == pytest.approx(1 - p - half, abs=0.004) and high == pytest.approx(1 - p + half, abs=0.004)
    assert result.normalized["a"] == (1.0, 1.0) and result.excludes_zero("a", "b")


def test_pairing_removes_the_noise_both_methods_share():
    """B = A except on 5 examples: paired, N_A − N_B lies in [0, 5/n]; unpaired it would spread by ±√(2p(1−p)/n)."""
    rng = np.random.default_rng(1)
    n = 400
    a = (rng.random(n) < 0.6).astype(float)
    b = a.copy()
    flip = np.flatnonzero(a)[:5]
    b[flip] = 0
    result = paired_bootstrap({"a": {"t": a}, "b": {"t": b}}, {"t": np.ones(n)}, pairs=[("a", "b")], resamples=2000)
    low, high = result.differences[("a", "b")]
    assert 0 <= low <= high <= 5 / n * 3  # a resample holds each flipped example ~Poisson(1) times


def test_the_same_seed_gives_the_same_intervals_and_normalization_divides_by_the_reference():
    rng = np.random.default_rng(2)
    tasks = {f"t{i}": (rng.random(100) < 0.8).astype(float) for i in range(3)}
    correct = {"m": {t: v * (rng.random(100) < 0.9) for t, v in tasks.items()}}
    first = paired_bootstrap(correct, tasks, resamples=500, seed=7)
    assert first == paired_bootstrap(correct, tasks, resamples=500, seed=7)
    point = np.mean([correct["m"][t].mean() / tasks[t].mean() for t in tasks])
    assert first.normalized["m"][0] < point < first.normalized["m"][1]
    with pytest.raises(ValueError, match="results where the reference has"):
        paired_bootstrap({"m": {"t0": np.ones(5), "t1": np.ones(100), "t2": np.ones(100)}}, tasks, resamples=10)


def test_rows_with_intervals_compare_with_the_references_and_the_best_row():
    """A track's rows: each against task_arithmetic and ties (``diff_vs_*``) and, ``against_best``, against
    the best row on test (``diffs[best]``); ``difference_to`` reads either; per-example results stay in the row."""
    from benchmarks.harness.intervals import best_row, rows_with_intervals
    from benchmarks.harness.report import difference_text, difference_to

    n = 400
    reference = {"t": [1] * n}
    correct = {"task_arithmetic": {"t": [1] * 200 + [0] * 200}, "ties": {"t": [1] * 300 + [0] * 100},
               "best": {"t": [1] * 302 + [0] * 98}, "far": {"t": [1] * 100 + [0] * 300}}
    entries = {name: {"normalized_avg": sum(v["t"]) / n} for name, v in correct.items()}
    rows = rows_with_intervals(entries, correct, reference, against_best=True)
    assert best_row(entries) == "best" and rows["best"]["correct"] == correct["best"]
    assert rows["best"]["diff_vs_task_arithmetic"] == pytest.approx(0.255) and rows["best"]["diff_vs_task_arithmetic_excludes_zero"]
    assert "diff_vs_ties" not in rows["ties"] and "diffs" not in rows["best"]
    assert not difference_to(rows["ties"], "best")["excludes_zero"]  # 2 examples apart: inside the noise
    assert difference_to(rows["far"], "best")["excludes_zero"] and difference_to(rows["far"], "best")["diff"] == pytest.approx(-0.505)
    assert difference_to(rows["best"], "ties") == {"diff": pytest.approx(0.005), "ci95": rows["best"]["diff_vs_ties_ci95"],
                                                  "excludes_zero": False}
    assert difference_text(rows["far"], "ties").startswith("**-50.0 [")  # bold: its interval excludes 0
    low, high = rows["ties"]["normalized_ci95"]
    assert low < 0.75 < high


def test_rows_drawn_again_carry_no_comparison_from_the_earlier_drawing():
    """``--update`` draws every row's intervals again: when another row became the best, no row keeps a
    difference to the old best one."""
    from benchmarks.harness.intervals import rows_with_intervals

    n = 200
    reference = {"t": [1] * n}
    correct = {"a": {"t": [1] * 150 + [0] * 50}, "b": {"t": [1] * 100 + [0] * 100}, "ties": {"t": [1] * 90 + [0] * 110}}
    entries = {name: {"normalized_avg": sum(v["t"]) / n} for name, v in correct.items()}
    first = rows_with_intervals(entries, correct, reference, against_best=True)
    assert set(first["b"]["diffs"]) == {"a"}
    correct["a"] = {"t": [1] * 50 + [0] * 150}  # a re-run row, now behind b
    first["a"] = {**first["a"], "normalized_avg": 0.25}
    again = rows_with_intervals(first, correct, reference, against_best=True)
    assert "diffs" not in again["b"] and set(again["a"]["diffs"]) == {"b"}
    assert again["a"]["diff_vs_ties"] == pytest.approx(0.25 - 0.45)
