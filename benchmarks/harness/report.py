"""Markdown pieces every track's page uses: percentages, tables, a configuration's parameters, the
paired-bootstrap intervals of a row (``benchmarks.harness.intervals``), the validation-grid table (every
figure read from the results mapping)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

from benchmarks.harness.intervals import COMBINE_PAIRS

INTERVALS_CAVEAT = (
    "Intervals: paired bootstrap, 10,000 seeded resamples of each task's test examples (the same resample "
    "for every method and the fine-tunes), 95 % percentile intervals of the normalized score (mean over "
    "tasks of merged / fine-tune accuracy) and of differences. **bold**: the difference's interval "
    "excludes 0; otherwise it is inside the noise.")


def intervals_note(results: Mapping[str, Any]) -> str:
    """What the rows' intervals are, or that the file has none (written before per-example results)."""
    if any("normalized_ci95" in entry for entry in results["methods"].values()):
        return INTERVALS_CAVEAT
    return "(no intervals: this file predates per-example results)"


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def interval_text(values: Optional[Sequence[float]]) -> str:
    """``[low, high]`` in points, or — where the row has no interval."""
    return "—" if not values else f"[{100 * values[0]:.1f}, {100 * values[1]:.1f}]"


def difference_text(row: Mapping[str, Any], ref: str) -> str:
    """The row's difference to ``ref`` in points with its interval, bold when the interval excludes 0."""
    found = difference_to(row, ref)
    if found is None:
        return "—"
    text = f"{100 * found['diff']:+.1f} {interval_text(found['ci95'])}"
    return f"**{text}**" if found["excludes_zero"] else text


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def difference_to(row: Mapping[str, Any], other: str) -> Optional[Mapping[str, Any]]:
    """The row's paired difference to ``other`` (``diff``, ``ci95``, ``excludes_zero``): from
    ``diff_vs_{other}`` for a reference row, from ``diffs[other]`` else; None where none was drawn."""
    if f"diff_vs_{other}_ci95" in row:
        found = {"diff": row[f"diff_vs_{other}"], "ci95": row[f"diff_vs_{other}_ci95"]}
    else:
        found = (row.get("diffs") or {}).get(other)
        if found is None:
            return None
    low, high = found["ci95"]
    return {"diff": found["diff"], "ci95": found["ci95"], "excludes_zero": low > 0 or high < 0}


def difference_note(row: Mapping[str, Any], ref: str) -> str:
    """`` (95 % CI [low, high], outside/inside the noise)`` for a target's difference, empty without one."""
    found = difference_to(row, ref)
    if found is None:
        return ""
    where = "outside" if found["excludes_zero"] else "inside"
    return f" (95 % CI {interval_text(found['ci95'])}, {where} the noise)"


def combine_pair_table(methods: Mapping[str, Any], tasks: Sequence[str] = (),
                       short: Optional[Mapping[str, str]] = None) -> List[str]:
    """AWD in front of X minus X alone (``COMBINE_PAIRS`` the track has): normalized points with the paired
    interval (bold when it excludes 0), then accuracy points per task in ``tasks``; no lines without a pair."""
    rows = []
    for plain, front in COMBINE_PAIRS:
        if plain in methods and front in methods:
            a, b = methods[plain], methods[front]
            found = difference_to(b, plain)
            overall = difference_text(b, plain) if found else f"{100 * (b['normalized_avg'] - a['normalized_avg']):+.1f}"
            rows.append([f"{front} − {plain}", overall,
                         *[f"{100 * (b['tasks'][t] - a['tasks'][t]):+.1f}" for t in tasks]])
    header = ["AWD in front − alone", "normalized [95 % CI]", *[(short or {}).get(t, t) for t in tasks]]
    return table(header, rows) if rows else []


def params_text(params: Mapping[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k not in ("merge_method", "weight")}
    return ", ".join(f"{k} {v}" for k, v in shown.items()) or "defaults"


def grid_table(results: Mapping[str, Any]) -> List[str]:
    rows = []
    for name, grid in results["validation_grid"].items():
        by_config: Dict[str, Any] = {}
        for point in grid["points"]:
            config = params_text({k: v for k, v in point["params"].items() if k != "lambda"})
            best = by_config.get(config)
            if best is None or point["normalized_avg"] > best["normalized_avg"]:
                by_config[config] = point
        for config, point in by_config.items():
            curve = " ".join(f"{p['params']['lambda']}:{pct(p['normalized_avg'])}" for p in grid["points"]
                             if params_text({k: v for k, v in p["params"].items() if k != "lambda"}) == config)
            rows.append([name, config, str(point["params"]["lambda"]), pct(point["normalized_avg"]), curve])
    return table(["method", "configuration", "best λ", "val. normalized", "val. normalized by λ"], rows)
