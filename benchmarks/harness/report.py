"""Markdown pieces both tracks' pages use: percentages, tables, a configuration's parameters, the
validation-grid table (every figure read from the results mapping)."""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Sequence


def pct(value: float) -> str:
    return f"{100 * value:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


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
