"""What ``mergekit-awd tune`` writes: ``tune_report.json``, ``tune.md``, ``tune_scores.png``, the
tuned configuration beside the input, and the model card's note on how the parameters were chosen."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import yaml

from mergekit_awd.constants import TUNE_PLOT, TUNE_REPORT, TUNE_TABLE
from mergekit_awd.tools.tune_plan import TUNED_MARKER

if TYPE_CHECKING:
    from mergekit_awd.tools.tune import TunePoint, TuneResult

REPORT_FILE = TUNE_REPORT
TABLE_FILE = TUNE_TABLE
PLOT_FILE = TUNE_PLOT


def cache_line(result: "TuneResult") -> str:
    """How many points the cache answered and why it could (or which inputs changed)."""
    use = result.cache
    line = f"{use.reused} of {len(result.points)} points from the cache"
    if use.reused:
        line += (f" (every input had the same content: {len(use.inputs)} inputs by XXH3-128 digest, the same "
                 f"data, configuration, scoring settings and code {use.code})")
    if use.changed:
        line += f"; scored again because these inputs changed since: {', '.join(use.changed)}"
    return line


def tuning_note(result: "TuneResult") -> str:
    """The model card's paragraph on how the parameters were chosen."""
    chosen = ", ".join(f"{k} = {v}" for k, v in result.chosen.items())
    grid = "; ".join(f"{a['name']} ∈ {{{', '.join(str(v) for v in a['values'])}}}" for a in result.axes)
    scale = "normalized score (per task, against its reference model)" if result.references else "score"
    return (f"The parameters were chosen with `mergekit-awd tune` on the merger's own validation data: "
            f"{chosen} gave the best mean {scale}, {result.chosen_score:.4f}, over the grid {grid} "
            f"({len(result.points)} points, {result.merges} merges, {result.evaluations} evaluations).")


def write_tuned_config(path: str, config: Dict[str, Any], result: "TuneResult") -> None:
    from mergekit_awd.pipeline.staging import atomic_write_text

    header = [TUNED_MARKER, f"# chosen: {json.dumps(result.chosen)}; mean score {result.chosen_score:.4f}"]
    atomic_write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False))


def write_tune_outputs(result: "TuneResult", out_dir: str) -> Dict[str, str]:
    """``tune_report.json``, ``tune.md`` (a table per point and task) and the score plot."""
    from mergekit_awd.pipeline.staging import atomic_write_text

    files = {"report": os.path.join(out_dir, REPORT_FILE), "table": os.path.join(out_dir, TABLE_FILE)}
    tasks = list(result.points[0].tasks) if result.points else []
    names = [a["name"] for a in result.axes]
    lines = [f"# mergekit-awd tune: {result.method}", "",
             f"Chosen: {json.dumps(result.chosen)} (mean score {result.chosen_score:.4f}); "
             f"{len(result.points)} points, {result.merges} merges ({result.merge_seconds:.0f} s), "
             f"{result.evaluations} evaluations ({result.evaluation_seconds:.0f} s), {result.seconds:.0f} s in all; "
             f"{cache_line(result)}.", "",
             "| " + " | ".join(names + tasks + ["mean score"]) + " |",
             "| " + " | ".join(["---"] * (len(names) + len(tasks) + 1)) + " |"]
    for point in result.points:
        mark = " **←**" if point.parameters == result.chosen else ""
        lines.append("| " + " | ".join([str(point.parameters[n]) for n in names]
                                       + [f"{point.tasks[t]['score']:.4f}" for t in tasks]
                                       + [f"{point.score:.4f}{mark}"]) + " |")
    atomic_write_text(files["table"], "\n".join(lines) + "\n")
    plot = _plot(result, os.path.join(out_dir, PLOT_FILE))
    if plot:
        files["plot"] = plot
    atomic_write_text(files["report"], json.dumps({**result.to_json(), "files": files}, indent=2, default=str) + "\n")
    return files


def _plot(result: "TuneResult", path: str) -> Optional[str]:
    """Score against the first numeric axis, one line per task and the mean, per value of the rest."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    axis = result.axes[0]["name"]
    if not all(isinstance(p.parameters[axis], (int, float)) for p in result.points):
        return None
    rest = [a["name"] for a in result.axes[1:]]
    series: Dict[str, List["TunePoint"]] = {}
    for point in result.points:
        series.setdefault(", ".join(f"{n}={point.parameters[n]}" for n in rest), []).append(point)
    tasks = list(result.points[0].tasks)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, points in series.items():
        xs = [p.parameters[axis] for p in points]
        prefix = f"{label}: " if label else ""
        ax.plot(xs, [p.score for p in points], marker="o", linewidth=2, label=f"{prefix}mean")
        for task in tasks if len(series) == 1 else []:
            ax.plot(xs, [p.tasks[task]["score"] for p in points], linestyle="--", alpha=0.7, label=task)
    ax.axvline(result.chosen[axis], color="grey", linewidth=1)
    ax.set_xlabel(axis)
    ax.set_ylabel("score")
    ax.set_title(f"mergekit-awd tune: {result.method}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    from mergekit_awd.pipeline.staging import staged_file

    with staged_file(path) as temporary:
        fig.savefig(temporary, format="png", dpi=110)
    plt.close(fig)
    return path


__all__ = ["cache_line", "tuning_note", "write_tuned_config", "write_tune_outputs", "REPORT_FILE", "TABLE_FILE", "PLOT_FILE"]
