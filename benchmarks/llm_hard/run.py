"""``python -m benchmarks.llm_hard.run`` (``./run.sh llm-hard``): the hard causal-LM track (issue #27).

1. the data sources, the SmolLM2 base and the eight strong fine-tunes (``benchmarks.llm_hard.models``,
   cached and resumable: about 2.3 h once on two cores);
2. every row of ``benchmarks.llm_hard.grids``: one float32 CLI merge at λ = 1, validation scores along
   the λ grid, the validation-chosen point merged again in bfloat16 and scored on test with every
   example's correctness kept;
3. paired bootstrap intervals (10,000 seeded resamples) of each row's normalized score and of its
   difference to task_arithmetic and to ties;
4. the K sweep: normalized score at K = 2, 4 (fixed seeded task subsets) and 8 for task_arithmetic,
   ties, the best AWD row, tsv, the best WUDI row and iso_cts;
5. writes benchmarks/results/llm_hard.json, llm_hard.md and llm_hard_k_sweep.png.

Everything is cached by configuration, fine-tune files and code version
(``~/.cache/mergekit-awd/benchmarks/llm_hard/merges/records.json``): a killed run continues.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from benchmarks.harness.runner import offline_environment

offline_environment()

from benchmarks.common import CACHE, RESULTS  # noqa: E402
from benchmarks.harness.runner import (  # noqa: E402
    log, method_tables, prepare_run, reference_scores, registered_methods_logged, require_unchanged_code, run_methods,
    run_settings, write_json,
)
from benchmarks.harness.experiment import merge_code_version  # noqa: E402
from benchmarks.llm_hard.targets import REFERENCES, all_targets, comparison_pairs  # noqa: E402

MERGES_DIR = CACHE / "llm_hard" / "merges"
RESULTS_JSON = RESULTS / "llm_hard.json"
K_VALUES = (2, 4, 8)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    parser.add_argument("--keep-merges", action="store_true", help="keep merged weights in ~/.cache/mergekit-awd/benchmarks")
    parser.add_argument("--methods", nargs="*", help="only these rows (default: all); the results then hold only them")
    parser.add_argument("--no-k-sweep", action="store_true", help="skip the K = 2, 4 merges")
    parser.add_argument("--no-learned", action="store_true",
                        help="skip the learned-coefficient rows (adamerging, awd_adamerging, layerwise_likelihood, "
                             "layerwise_tsv) and the method chooser")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    started = prepare_run(errors_only=True)
    code = merge_code_version()
    from benchmarks.text_tasks.setup_data import ensure_data_sources

    if not args.no_setup:
        ensure_data_sources()
    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm_hard.experiment import HardLLMBenchmark
    from benchmarks.llm_hard.grids import combine_pairs, hard_grids
    from benchmarks.llm_hard.models import ensure_hard_finetunes
    from benchmarks.llm_hard.tasks import HARD_TASK_NAMES

    base_dir = ensure_base_model()
    folders = ensure_hard_finetunes()
    registered = registered_methods_logged()
    bench = HardLLMBenchmark(HARD_TASK_NAMES, folders, base_dir, MERGES_DIR)
    individual, pretrained = reference_scores(bench)
    grids = [g for g in hard_grids(registered) if not args.methods or g.name in args.methods]
    runs = run_methods(bench, grids, individual)
    learned = None if args.no_learned else learned_and_chosen(bench, folders, base_dir, runs, individual)
    compared = comparison_pairs(runs, combine_pairs(registered), list(learned or {}))
    methods = method_rows(runs, bench.reference_correct("individual"), learned, compared)
    seconds, fingerprints = dict(bench.seconds), [bench.fingerprint]
    if not args.keep_merges:
        bench.cleanup()
    del bench
    k_sweep = {} if args.no_k_sweep else run_k_sweep(runs, folders, base_dir, seconds, args.keep_merges, fingerprints)
    seconds["invocation"] = time.perf_counter() - started
    results = hard_results(base_dir, folders, individual, pretrained, runs, methods, k_sweep,
                           all_invocations(seconds, fingerprints))
    results["targets"] = all_targets(results, compared)
    require_unchanged_code(code)
    write(results)
    log(f"[done] {RESULTS_JSON} ({time.perf_counter() - started:.0f} s)")
    return results


def method_rows(runs: Mapping[str, Any], reference: Mapping[str, Sequence[int]],
                extra: Optional[Mapping[str, Any]] = None, compared: Sequence[Tuple[str, str]] = ()
                ) -> Dict[str, Any]:
    """Each row's results entry with its 95 % intervals (``benchmarks.harness.intervals``): normalized
    score, difference to each reference; ``extra``: row -> (entry, per-example results) of rows not run
    by the grid (the learned ones); ``compared``: further (a, b) whose difference goes into a's
    ``diffs[b]`` (``targets.comparison_pairs``)."""
    from benchmarks.harness.intervals import run_rows_with_intervals

    return run_rows_with_intervals(runs, reference, extra or {}, REFERENCES, compared)


def learned_and_chosen(bench: Any, folders: Mapping[str, Path], base_dir: Path, runs: Mapping[str, Any],
                       individual: Mapping[str, Any]) -> Dict[str, Any]:
    """The rows of ``benchmarks.llm_hard.adamerging``: the layer-wise ones and ``tune_methods``."""
    from benchmarks.llm_hard.adamerging import chooser_row, learned_rows

    rows = dict(learned_rows(bench, folders, base_dir, individual["test"]))
    chosen, entry = chooser_row(runs)
    rows["tune_methods"] = (entry, runs[chosen].final.scores["correct"])
    scores = ", ".join(f"{name} {100 * entry['normalized_avg']:.1f}" for name, (entry, _) in rows.items())
    log(f"[learned] test normalized: {scores} (tune_methods chose {chosen})")
    return rows


def k_sweep_rows(runs: Mapping[str, Any]) -> Dict[str, str]:
    """The K sweep's method -> the row it runs: the best AWD and the best WUDI row chosen on validation."""
    from benchmarks.llm_hard.grids import K_SWEEP_METHODS
    from benchmarks.llm_hard.targets import best_by_validation

    chosen = {"best_awd": best_by_validation(runs, "awd_"), "best_wudi": best_by_validation(runs, "wudi_")}
    return {m: chosen.get(m, m) for m in K_SWEEP_METHODS if chosen.get(m, m) in runs}


def all_invocations(seconds: Mapping[str, float], fingerprints: Sequence[str]) -> Dict[str, Any]:
    """settings' seconds over every process of this run (``harness.experiment.invocation_seconds``)."""
    from benchmarks.harness.experiment import invocation_seconds

    return invocation_seconds(MERGES_DIR / "records.json", fingerprints, seconds)


def run_k_sweep(runs: Mapping[str, Any], folders: Mapping[str, Path], base_dir: Path, seconds: Dict[str, float],
                keep_merges: bool, fingerprints: List[str]) -> Dict[str, Dict[str, Any]]:
    """Normalized test score of the sweep's rows on each K's fixed task subset (λ chosen on that
    subset's validation split; K = 8 is the main table)."""
    from benchmarks.harness.runner import run_method
    from benchmarks.llm_hard.experiment import HardLLMBenchmark
    from benchmarks.llm_hard.tasks import k_subset

    rows = k_sweep_rows(runs)
    sweep: Dict[str, Dict[str, Any]] = {}
    for k in K_VALUES:
        subset = k_subset(k)
        if k == len(folders):
            sweep[str(k)] = {m: _k_entry(subset, runs[row].entry, row) for m, row in rows.items()}
            continue
        bench = HardLLMBenchmark(subset, {t: folders[t] for t in subset}, base_dir, MERGES_DIR)
        fingerprints.append(bench.fingerprint)
        individual, _ = reference_scores(bench)
        sweep[str(k)] = {m: _k_entry(subset, run_method(bench, runs[row].grid, individual, brief=True).entry, row)
                         for m, row in rows.items()}
        for part, value in bench.seconds.items():
            seconds[part] += value
        if not keep_merges:
            bench.cleanup()
    return sweep


def _k_entry(subset: Sequence[str], entry: Mapping[str, Any], row: str) -> Dict[str, Any]:
    return {"row": row, "tasks": list(subset), "normalized_avg": entry["normalized_avg"], "avg": entry["avg"],
            "params": entry["params"]}


def hard_results(base_dir: Path, folders: Mapping[str, Path], individual: Mapping[str, Any],
                 pretrained: Mapping[str, Any], runs: Mapping[str, Any], methods: Mapping[str, Any],
                 k_sweep: Mapping[str, Any], seconds: Mapping[str, Any]) -> Dict[str, Any]:
    """llm_hard.json (layout: issue #27)."""
    import json

    from benchmarks.harness.results import reference_entry
    from benchmarks.llm.finetune import DONE_MARKER
    from benchmarks.llm_hard.models import task_vector_stats
    from benchmarks.llm_hard.tasks import GENERATIVE, HARD_TASK_NAMES, hard_task_splits

    tasks = {}
    for task in HARD_TASK_NAMES:
        record = json.loads((folders[task] / DONE_MARKER).read_text())
        splits = hard_task_splits(task, _tokenizer(base_dir))
        tasks[task] = {"kind": "generative (exact match)" if task in GENERATIVE else "classification",
                       "train": len(splits.train), "validation": len(splits.validation), "test": len(splits.test),
                       **task_vector_stats(base_dir, folders[task]), "finetune": record}
    _, grids = method_tables(runs)
    return {
        "tasks": tasks,
        "individual": individual["test"], "individual_validation": individual["validation"],
        "pretrained": reference_entry(pretrained["test"], individual["test"], HARD_TASK_NAMES),
        "methods": dict(methods), "validation_grid": grids, "k_sweep": dict(k_sweep),
        "settings": {**seconds, "code": run_settings()["merge_code"], **run_settings(),
                     "final_merge_dtype": "bfloat16", "grid_merge_dtype": "float32"},
    }


def _tokenizer(base_dir: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(base_dir))


def write(results: Mapping[str, Any]) -> None:
    from benchmarks.llm_hard.report import write_markdown, write_plot

    write_json(RESULTS_JSON, results)
    write_markdown(results, RESULTS_JSON.with_suffix(".md"))
    write_plot(results, RESULTS_JSON.with_name("llm_hard_k_sweep.png"))


if __name__ == "__main__":
    main()
