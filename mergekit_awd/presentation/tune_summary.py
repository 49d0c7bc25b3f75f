"""What ``mergekit-awd tune`` found, made readable: the ``tune.md`` table, the score plot, the model
card's note on how the parameters were chosen and the line on what the score cache answered.

Each function renders a tune result's JSON (``TuneResult.to_json()``: ``points`` as dicts); writing
the files is ``tools.tune_report``'s.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

TuneJson = Dict[str, Any]


def cache_line(result: TuneJson) -> str:
    """How many points the cache answered and why it could (or which inputs changed)."""
    use = result["cache"]
    line = f"{use['reused']} of {len(result['points'])} points from the cache"
    if use["reused"]:
        line += (f" (every input had the same content: {len(use['inputs'])} inputs by XXH3-128 digest, the same "
                 f"data, configuration, scoring settings and code {use['code']})")
    if use["changed"]:
        line += f"; scored again because these inputs changed since: {', '.join(use['changed'])}"
    return line


def tuning_note(result: TuneJson) -> str:
    """The model card's paragraph on how the parameters were chosen."""
    chosen = ", ".join(f"{k} = {v}" for k, v in result["chosen"].items())
    grid = "; ".join(f"{a['name']} ∈ {{{', '.join(str(v) for v in a['values'])}}}" for a in result["axes"])
    scale = "normalized score (per task, against its reference model)" if result["references"] else "score"
    return (f"The parameters were chosen with `mergekit-awd tune` on the merger's own validation data: "
            f"{chosen} gave the best mean {scale}, {result['chosen_score']:.4f}, over the grid {grid} "
            f"({len(result['points'])} points, {result['merges']} merges, {result['evaluations']} evaluations).")


def tune_table(result: TuneJson) -> str:
    """``tune.md``: what was chosen and what it cost, then one row per point (a column per task)."""
    points = result["points"]
    tasks = list(points[0]["tasks"]) if points else []
    names = [a["name"] for a in result["axes"]]
    lines = [f"# mergekit-awd tune: {result['method']}", "",
             f"Chosen: {json.dumps(result['chosen'])} (mean score {result['chosen_score']:.4f}); "
             f"{len(points)} points, {result['merges']} merges ({result['merge_seconds']:.0f} s), "
             f"{result['evaluations']} evaluations ({result['evaluation_seconds']:.0f} s), "
             f"{result['seconds']:.0f} s in all; {cache_line(result)}.", "",
             "| " + " | ".join(names + tasks + ["mean score"]) + " |",
             "| " + " | ".join(["---"] * (len(names) + len(tasks) + 1)) + " |"]
    for point in points:
        mark = " **←**" if point["parameters"] == result["chosen"] else ""
        lines.append("| " + " | ".join([str(point["parameters"][n]) for n in names]
                                       + [f"{point['tasks'][t]['score']:.4f}" for t in tasks]
                                       + [f"{point['score']:.4f}{mark}"]) + " |")
    return "\n".join(lines) + "\n"


def score_figure(result: TuneJson) -> Optional[Any]:
    """Score against the first numeric axis, one line per task and the mean, per value of the rest:
    a matplotlib ``Figure`` on the Agg canvas (no pyplot state); None without matplotlib or a numeric axis."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    axis = result["axes"][0]["name"]
    if not all(isinstance(p["parameters"][axis], (int, float)) for p in result["points"]):
        return None
    rest = [a["name"] for a in result["axes"][1:]]
    series: Dict[str, List[Dict[str, Any]]] = {}
    for point in result["points"]:
        series.setdefault(", ".join(f"{n}={point['parameters'][n]}" for n in rest), []).append(point)
    tasks = list(result["points"][0]["tasks"])
    figure = Figure(figsize=(7, 4.2), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    for label, points in series.items():
        xs = [p["parameters"][axis] for p in points]
        prefix = f"{label}: " if label else ""
        ax.plot(xs, [p["score"] for p in points], marker="o", linewidth=2, label=f"{prefix}mean")
        for task in tasks if len(series) == 1 else []:
            ax.plot(xs, [p["tasks"][task]["score"] for p in points], linestyle="--", alpha=0.7, label=task)
    ax.axvline(result["chosen"][axis], color="grey", linewidth=1)
    ax.set_xlabel(axis)
    ax.set_ylabel("score")
    ax.set_title(f"mergekit-awd tune: {result['method']}")
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def layerwise_figure(result: TuneJson) -> Optional[Any]:
    """``--layerwise``: the learned coefficient of every model (a line each) per group of tensors, as a
    matplotlib ``Figure`` (no pyplot state); None without a layer-wise result or matplotlib."""
    entry = result.get("layerwise")
    if not entry:
        return None
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return None
    figure = Figure(figsize=(max(6.0, 0.25 * len(entry["groups"])), 4.2), dpi=110)
    FigureCanvasAgg(figure)
    ax = figure.subplots()
    positions = list(range(len(entry["groups"])))
    for model, row in zip(entry["models"], entry["coefficients"]):
        ax.plot(positions, row, marker="o", linewidth=1.5, label=model)
    from mergekit_awd.core.layerwise import INITIAL_COEFFICIENT

    ax.axhline(entry.get("initial", INITIAL_COEFFICIENT), color="grey", linewidth=1, linestyle=":")
    ax.set_xticks(positions)
    ax.set_xticklabels([g.replace("block.", "") for g in entry["groups"]], fontsize=7, rotation=90)
    ax.set_xlabel("group (embeddings, blocks, final norm, head)")
    ax.set_ylabel("λ")
    ax.set_title(f"mergekit-awd tune --layerwise ({entry['objective']}): {result['method']}")
    ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


__all__ = ["cache_line", "tuning_note", "tune_table", "score_figure", "layerwise_figure"]
