"""llm_hard.md and the K-sweep plot, generated from llm_hard.json (never edited by hand)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Optional

from benchmarks.harness.report import INTERVALS_CAVEAT, difference_text, interval_text


def _pct(value: Optional[float]) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def chosen_lambda(results: Mapping[str, Any], name: str) -> str:
    """The row's validation-chosen λ, marked "(grid edge)" when it is the grid's smallest or largest."""
    lam = results["methods"][name].get("params", {}).get("lambda")
    grid = (results.get("validation_grid") or {}).get(name, {}).get("lambdas") or []
    if lam is None:
        return "learned" if "layerwise" in results["methods"][name] else "—"
    return f"{lam:g}" + (" (grid edge)" if grid and lam in (min(grid), max(grid)) else "")


def method_table(results: Mapping[str, Any]) -> List[str]:
    tasks = list(results["tasks"])
    lines = ["| method | normalized % (95 % CI) | vs task_arithmetic | vs ties | λ | " + " | ".join(tasks) + " |",
             "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in tasks) + " |"]
    rows = sorted(results["methods"].items(), key=lambda item: -item[1]["normalized_avg"])
    for name, row in rows:
        lines.append(f"| {name} | {_pct(row['normalized_avg'])} {interval_text(row.get('normalized_ci95'))} | "
                     f"{difference_text(row, 'task_arithmetic')} | {difference_text(row, 'ties')} | "
                     f"{chosen_lambda(results, name)} | " + " | ".join(_pct(row["tasks"][t]) for t in tasks) + " |")
    for label, entry in (("fine-tunes (each on its task)", {"tasks": results["individual"]}),
                         ("base", results["pretrained"])):
        lines.append(f"| {label} | {_pct(entry.get('normalized_avg'))} | | | | "
                     + " | ".join(_pct(entry["tasks"][t]) for t in tasks) + " |")
    return lines


def task_table(results: Mapping[str, Any]) -> List[str]:
    lines = ["| task | kind | train | validation | test | ‖τ‖/‖θ‖ | bf16 round-trip error of τ | fine-tune s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, task in results["tasks"].items():
        lines.append(f"| {name} | {task['kind']} | {task['train']} | {task['validation']} | {task['test']} | "
                     f"{task['tau_norm_ratio']:.4f} | {100 * task['bf16_roundtrip_error']:.1f} % | "
                     f"{task['finetune']['seconds']:.0f} |")
    return lines


def k_sweep_table(results: Mapping[str, Any]) -> List[str]:
    sweep = results.get("k_sweep") or {}
    if not sweep:
        return ["(no K sweep in this run)"]
    ks = sorted(sweep, key=int)
    methods = list(sweep[ks[-1]])
    lines = ["| method (row) | " + " | ".join(f"K = {k}" for k in ks) + " |", "| --- |" + " --- |" * len(ks)]
    for method in methods:
        row = sweep[ks[-1]][method]["row"]
        lines.append(f"| {method} ({row}) | " + " | ".join(_pct(sweep[k].get(method, {}).get("normalized_avg"))
                                                           for k in ks) + " |")
    lines.append("")
    lines.append("Task subsets: " + "; ".join(f"K = {k}: {', '.join(sweep[k][methods[0]]['tasks'])}" for k in ks))
    return lines


def _measured(target: Mapping[str, Any]) -> str:
    value, unit = target["measured"], target.get("unit")
    if value is None:
        return "—"
    if unit == "seconds":
        return f"{value:.0f} s ({value / 3600:.2f} h)"
    if unit == "points":
        return f"{100 * value:+.1f} points" + (f" {interval_text(target['interval'])}" if target.get("interval") else "")
    return f"{100 * value:.1f} %"


def targets_table(results: Mapping[str, Any]) -> List[str]:
    """The issues' targets as measured (``targets.all_targets``), met or missed."""
    targets = results.get("targets") or []
    if not targets:
        return ["(no targets in this results file)"]
    lines = ["| target | measured (95 % CI) | met |", "| --- | --- | --- |"]
    lines += [f"| {t['target']} | {_measured(t)} | {'yes' if t['met'] else '**no**'} |" for t in targets]
    return lines


def write_markdown(results: Mapping[str, Any], path: Path) -> None:
    settings = results["settings"]
    lines = ["# Hard LLM track: SmolLM2-135M-Instruct, eight tasks (`python -m benchmarks.llm_hard.run`)", "",
             f"Generated from `llm_hard.json`; code {settings['code']}; {settings['seconds']} s "
             f"(merging {settings.get('seconds_merging')} s, scoring {settings.get('seconds_scoring')} s; summed "
             f"over {settings.get('invocations', 1)} process(es) of a resumed run) on {settings['threads']} threads.  λ (and the methods' own parameters) chosen on validation, "
             "scored on test, final merges in bfloat16.", "", INTERVALS_CAVEAT, "", "## Methods (test)", "",
             *method_table(results), "", "## Targets (issues #27 and #29)", "", *targets_table(results), "",
             "## Tasks and fine-tunes", "", *task_table(results), "",
             "## K sweep (normalized %, test)", "", *k_sweep_table(results), ""]
    path.write_text("\n".join(lines))


def write_plot(results: Mapping[str, Any], path: Path) -> None:
    sweep = results.get("k_sweep") or {}
    if not sweep:
        return
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    ks = sorted(sweep, key=int)
    for method in sweep[ks[-1]]:
        axes.plot([int(k) for k in ks], [100 * sweep[k][method]["normalized_avg"] for k in ks], marker="o",
                  label=f"{method} ({sweep[ks[-1]][method]['row']})")
    axes.set_xlabel("K (tasks merged)")
    axes.set_ylabel("normalized accuracy, test (%)")
    axes.set_xticks([int(k) for k in ks])
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
