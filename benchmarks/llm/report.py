"""``llm_quality.md`` and the ``llm_*.png`` plots: every figure comes from ``llm_quality.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Sequence

from benchmarks.harness.report import (
    combine_pair_table, difference_note, difference_text, grid_table, interval_text, intervals_note, params_text, pct,
    table,
)

COMMAND = "./run.sh llm-quality   (python -m benchmarks.llm.run)"
PLOT_FILES = ("llm_accuracy_per_method.png", "llm_accuracy_vs_lambda.png", "llm_awd_cosines.png")
SHORT = {"rt_sentiment": "rt_sent", "fortune_language": "fort_lang", "wordnet_supersense": "wn_super",
         "arithmetic": "arith"}
# the plots label the tasks as the MiniLM track's plots do (arithmetic spelled out)
PLOT_SHORT = {task: label for task, label in SHORT.items() if task != "arithmetic"}


def _drift_text(update: Mapping[str, Any]) -> str:
    drift = update.get("reference_perplexity_max_relative_difference")
    return ("" if drift is None else
            f"; fine-tunes and base scored as committed: accuracies equal, perplexities within {drift:.1e} relative")


def _breakdown_text(run: Mapping[str, Any]) -> str:
    if "seconds_merging" not in run:
        return ""
    return f" ({run['seconds_merging']} s in CLI merges, {run['seconds_scoring']} s scoring)"


def _grids() -> list:
    from benchmarks.llm.grids import llm_grids
    from benchmarks.harness.merging import registered_methods

    return llm_grids(registered_methods())


def _ours(results: Mapping[str, Any]) -> List[str]:
    """The package's rows (every grid but mergekit's own methods), in the grid table's order."""
    from benchmarks.llm.grids import SPARSIFIED

    mergekits = {"task_arithmetic", *SPARSIFIED}
    return [g.name for g in _grids() if g.name not in mergekits and g.name in results["methods"]]


def main_table(results: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    header = ["method", *[SHORT.get(t, t) for t in tasks], "avg", "normalized (95 % CI)", "vs task_arithmetic",
              "vs ties", "val. normalized",
              "perplexity", "merge s", "chosen on validation"]
    individual = results["individual"]
    rows = [["individual fine-tunes", *[pct(individual[t]) for t in tasks],
             pct(sum(individual.values()) / len(tasks)), "100.0", "", "", "", "", "", ""]]
    pre = results["pretrained"]
    rows.append(["base (SmolLM2-135M-Instruct)", *[pct(pre["tasks"][t]) for t in tasks], pct(pre["avg"]),
                 pct(pre["normalized_avg"]), "", "", "", f"{pre['perplexity']:.2f}", "", ""])
    for name, entry in results["methods"].items():
        rows.append([name, *[pct(entry["tasks"][t]) for t in tasks], pct(entry["avg"]),
                     f"**{pct(entry['normalized_avg'])}** {interval_text(entry.get('normalized_ci95'))}",
                     difference_text(entry, "task_arithmetic"), difference_text(entry, "ties"),
                     pct(entry["validation_normalized_avg"]),
                     f"{entry['perplexity']:.2f}", f"{entry['merge_seconds']:.1f}", params_text(entry["params"])])
    return table(header, rows)


def finetune_table(results: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    rows = []
    for t in tasks:
        record = results["finetunes"][t]
        gain = results["individual"][t] - results["pretrained"]["tasks"][t]
        rows.append([t, str(results["splits"][t]["train"]), str(results["splits"][t]["validation"]),
                     str(results["splits"][t]["test"]), f"{record['seconds']:.0f}",
                     f"{record['seconds_per_step']:.2f}", pct(results["pretrained"]["tasks"][t]),
                     pct(results["individual"][t]), f"{100 * gain:+.1f}",
                     f"{results['individual_perplexity'][t]:.2f}"])
    return table(["task", "train", "validation", "test", "fine-tune s", "s/step", "base test",
                  "fine-tune test", "gain (points)", "fine-tune perplexity"], rows)


def cosine_lines(results: Mapping[str, Any]) -> List[str]:
    def mean_offdiag(matrix: Sequence[Sequence[float]]) -> float:
        values = [abs(v) for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j]
        return sum(values) / len(values)

    lines = []
    raw = results["task_vector_cos"]
    labels = [SHORT.get(t, t) for t in raw["tasks"]]
    lines += table(["cos(τ_i, τ_j)", *labels],
                   [[labels[i], *[f"{v:+.3f}" for v in row]] for i, row in enumerate(raw["cos"])])
    lines.append("")
    rows = []
    for label, cos in (("SmolLM2 (this track)", results.get("awd_model_scope_cosines")),
                       ("MiniLM benchmark", results.get("minilm_awd_model_scope_cosines"))):
        if cos:
            rows.append([label, str(len(cos["tasks"])), f"{mean_offdiag(cos['abs_cos_before']):.4f}",
                         f"{mean_offdiag(cos['abs_cos_after']):.4f}"])
    lines += table(["task vectors", "K", "mean |cos| before AWD", "after AWD (model scope, chosen α)"], rows)
    return lines


def targets(results: Mapping[str, Any]) -> List[str]:
    methods = results["methods"]
    lines = []
    ours = _ours(results)
    if ours and "ties" in methods:
        best = max(ours, key=lambda n: methods[n]["normalized_avg"])
        margin = 100 * (methods[best]["normalized_avg"] - methods["ties"]["normalized_avg"])
        lines.append(f"- best method of the package on test ({best}) vs `ties`: {margin:+.1f} normalized points"
                     f"{difference_note(methods[best], 'ties')} (target ≥ +3.0: {'met' if margin >= 3.0 else 'missed'})")
    awds = [n for n in ("awd_tensor", "awd_model", "awd_row") if n in methods]
    if awds and "task_arithmetic" in methods:
        best = max(awds, key=lambda n: methods[n]["normalized_avg"])
        margin = 100 * (methods[best]["normalized_avg"] - methods["task_arithmetic"]["normalized_avg"])
        lines.append(f"- best `awd` on test ({best}) vs `task_arithmetic`: {margin:+.1f} normalized points"
                     f"{difference_note(methods[best], 'task_arithmetic')} (target ≥ 0: {'met' if margin >= 0 else 'missed'})")
    if "task_arithmetic" in methods:
        ta = methods["task_arithmetic"]["perplexity"]
        worse = [n for n in ours if methods[n]["perplexity"] > ta]
        listed = ", ".join(f"{n} {methods[n]['perplexity']:.2f}" for n in worse) or "none"
        lines.append(f"- perplexity at the chosen λ, `task_arithmetic` {ta:.2f}; ours above it: {listed} "
                     f"(target: none above it: {'met' if not worse else 'missed'})")
    gains = {t: results["individual"][t] - results["pretrained"]["tasks"][t] for t in results["individual"]}
    short = [t for t, g in gains.items() if g < 0.10]
    lines.append(f"- every fine-tune ≥ base + 10 points on its own task: "
                 f"{'met' if not short else 'missed for ' + ', '.join(short)}")
    return lines


def _combine_section(methods: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    """AWD in front of X minus X alone, with the paired intervals (no lines without such a pair)."""
    rows = combine_pair_table(methods, tasks)
    return ["## AWD in front of X, minus X alone (test; normalized points with the paired 95 % interval, "
            "accuracy points per task)", "", *rows, ""] if rows else []


def write_markdown(results: Mapping[str, Any], path: Path) -> None:
    tasks = list(results["individual"])
    settings = results["settings"]
    lines = [
        "# LLM track: SmolLM2-135M-Instruct fine-tunes merged through `mergekit-awd`",
        "",
        f"Reproduce: `{COMMAND}` (fine-tunes cached in ~/.cache/mergekit-awd/benchmarks/llm). Every figure below is "
        "read from `llm_quality.json`, written by that command; nothing is edited by hand.",
        "",
        f"Protocol: λ (and density, α) chosen on the validation split from float32 merges at λ = 1 "
        f"(θ_base + λ·D), the chosen point merged again with `dtype: {settings['final_merge_dtype']}` through "
        "the CLI and scored on test. Classification by rank classification (the answer with the highest "
        "summed log-probability), `arithmetic` by greedy decoding and exact match; prompt format: "
        f"{settings['prompt_format']}; inputs cut to {settings['max_input_tokens']} tokens. "
        f"Perplexity: {settings['perplexity_texts']} English fortunes used by no task "
        f"({', '.join(Path(p).name for p in settings['perplexity_sources'])}), 128 tokens each at most. "
        "Normalized = mean over tasks of merged / fine-tune accuracy on test.",
        "",
        "## Test accuracy (%)",
        "",
        *main_table(results, tasks),
        "",
        intervals_note(results),
        "",
        "## Targets",
        "",
        *targets(results),
        "",
        *_combine_section(results["methods"], tasks),
        "## Fine-tunes",
        "",
        *finetune_table(results, tasks),
        "",
        "## Task vectors: cosines, and what AWD removes",
        "",
        *cosine_lines(results),
        "",
        "## Validation grids",
        "",
        *grid_table(results),
        "",
        f"Run: {settings['threads']} threads, {settings['seconds']} s with cached fine-tunes and merges as "
        f"found{_breakdown_text(settings)}; code `{settings['merge_code']}`.",
        *[f"Rows {', '.join(u['methods'])} added later by `{u['command']}` ({u['seconds']} s{_breakdown_text(u)}, code "
          f"`{u['merge_code']}`{_drift_text(u)})." for u in settings.get("updates", [])],
        "",
    ]
    path.write_text("\n".join(lines))


def write_plots(results: Mapping[str, Any], folder: Path) -> None:
    from benchmarks.harness.plots import lambda_curves, plot_accuracy_per_method, plot_awd_cosines, pyplot

    plot_accuracy_per_method(results, folder / PLOT_FILES[0],
                             "SmolLM2-135M: test accuracy per task (rank classification / exact match)", PLOT_SHORT)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
    from benchmarks.llm.grids import AWD_LAMBDAS, TA_LAMBDAS

    # a grid on the additive λ scales (task_arithmetic's, AWD's) adds the task vectors; the others
    # (ties/della's mean, tsv's, iso's) average or rescale them
    adds = {g.name for g in _grids() if g.lambdas in (TA_LAMBDAS, AWD_LAMBDAS)}
    for ax, names, title in (
        (axes[0], [n for n in results["methods"] if n in adds], "methods that add the task vectors"),
        (axes[1], [n for n in results["methods"] if n not in adds], "methods that average / rescale"),
    ):
        for name in names:
            for label, lams, values in lambda_curves(results, name):
                ax.plot(lams, [100 * v for v in values], marker="o", label=label)
        ax.set_xlabel("λ")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("normalized validation accuracy (%)")
    fig.tight_layout()
    fig.savefig(folder / PLOT_FILES[1], dpi=110)
    plt.close(fig)
    if results.get("awd_model_scope_cosines"):
        plot_awd_cosines(results, folder / PLOT_FILES[2], PLOT_SHORT)
