"""``python -m benchmarks.quality.tune_check``: the Python API ``mergekit_awd.tune_merge`` on the MiniLM
benchmark, with the benchmark's own scorer (BERT encoder + each task's head, accuracy), not the
causal-LM one of ``mergekit-awd tune``.

For each method row of a results file (default: quality.json, every row of the track; the configuration
the benchmark chose on validation, λ aside), ``tune_merge`` runs the benchmark's λ grid with the
validation split as its scorer and the individual fine-tunes' validation accuracies as references
(so its score is the benchmark's validation normalized accuracy), and the check compares: tune's λ
with the benchmark's, tune's score with the benchmark's, and tune's cost (merges, evaluations, s).
Writes benchmarks/results/quality_tune_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.harness.runner import offline_environment

offline_environment()

DEFAULT_METHODS = ("task_arithmetic", "awd_row", "tsv", "awd_row_tsv", "iso_cts")


def check_method(bench: Any, results: Dict[str, Any], name: str, references: Dict[str, float]) -> Dict[str, Any]:
    """``tune_merge`` over the benchmark's λ grid for one method row, against the benchmark's choice."""
    from benchmarks.harness.merging import spec_from_params
    from benchmarks.quality.encoder_io import load_encoder
    from benchmarks.quality.paths import CACHE_DIR
    from mergekit_awd import tune_merge
    from mergekit_awd.tools.tune import GridAxis

    tasks = bench.tasks

    def scorer(model: Any, only: Optional[Sequence[str]]) -> Dict[str, Dict[str, float]]:
        scores = bench.score(model, "validation", list(only) if only else tasks)
        return {task: {"score": value} for task, value in scores.items()}

    entry = results["methods"][name]
    spec, chosen = spec_from_params(entry["params"])
    lambdas = tuple(results["validation_grid"][name]["lambdas"])
    config = bench.merge_configuration(spec.with_lambda(1.0), tasks)
    out = CACHE_DIR / "tune_check" / name
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    result = tune_merge(config, scorer, load_encoder, out, [GridAxis("lambda", lambdas)], references=references,
                        quiet=True)
    return {
        "configuration": spec.label(), "lambdas": list(lambdas), "benchmark_lambda": chosen,
        "tune_lambda": result.chosen["lambda"], "same_lambda": result.chosen["lambda"] == chosen,
        "benchmark_validation_normalized": entry["validation_normalized_avg"],
        "tune_validation_normalized": result.chosen_score, "merges": result.merges,
        "evaluations": result.evaluations, "merge_seconds": result.merge_seconds,
        "evaluation_seconds": result.evaluation_seconds, "seconds": time.perf_counter() - started,
    }


def markdown_lines(args: argparse.Namespace, rows: Dict[str, Any]) -> List[str]:
    header = ["method", "λ grid", "benchmark λ", "tune λ", "same", "benchmark val. normalized %",
              "tune val. normalized %", "merges", "merge s", "evaluations", "evaluation s"]
    lines = ["# `mergekit_awd.tune_merge` on the MiniLM benchmark", "",
             f"Command: `python -m benchmarks.quality.tune_check --results {args.results} --methods "
             f"{' '.join(args.methods)}`. The Python API with the benchmark's scorer (each task's head on the merged "
             "encoder, validation accuracy) and the fine-tunes' validation accuracies as references; the "
             "configuration is the one the benchmark chose, λ tuned over the benchmark's grid. The benchmark merges "
             "in the config's dtype and tune in float32, so the scores may differ in the last digits.", "",
             "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    for name, row in rows.items():
        lines.append(f"| {name} | {', '.join(str(v) for v in row['lambdas'])} | {row['benchmark_lambda']} | "
                     f"{row['tune_lambda']} | {row['same_lambda']} | {100 * row['benchmark_validation_normalized']:.2f} | "
                     f"{100 * row['tune_validation_normalized']:.2f} | {row['merges']} | {row['merge_seconds']:.0f} | "
                     f"{row['evaluations']} | {row['evaluation_seconds']:.0f} |")
    return lines


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="quality", help="results file stem in benchmarks/results")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    args = parser.parse_args(argv)
    from benchmarks.harness.runner import prepare_run

    prepare_run()
    from benchmarks.common import save_results
    from benchmarks.quality.experiment import six_task_benchmark
    from benchmarks.quality.paths import RESULTS_DIR
    from benchmarks.quality.run import VALIDATION_PER_TASK
    from benchmarks.text_tasks.setup_data import ensure_data_sources

    results = json.loads((RESULTS_DIR / f"{args.results}.json").read_text())
    ensure_data_sources()
    bench = six_task_benchmark(VALIDATION_PER_TASK)
    references = bench.individual_scores("validation")
    rows: Dict[str, Any] = {}
    for name in args.methods:
        rows[name] = check_method(bench, results, name, references)
        print(name, rows[name], flush=True)
    out_json = {"results": args.results, "methods": rows}
    save_results("quality_tune_check", out_json, markdown_lines(args, rows))
    bench.cleanup()
    return out_json


if __name__ == "__main__":
    main()
