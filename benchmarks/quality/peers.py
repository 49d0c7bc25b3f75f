"""``python -m benchmarks.quality.peers``: the data-free peers on the MiniLM benchmark, in one run.

The same six fine-tunes, splits, validation λ grids and test scoring as ``benchmarks.quality.run``
(its ``Benchmark``, ``run_grid``, ``best_point``), for task_arithmetic, ties and tsv (the references
of ``quality.md``) and the peers wudi (adam and exact), iso_c and iso_cts, each over ``select``
block_linear (the package default) and matrices (the references' every 2-D tensor).  Without the
AWD diagnostics and the task subsets of the full run, it fits a session.  Writes
benchmarks/results/quality_peers.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Dict, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

VALIDATION_PER_TASK = 120  # as benchmarks.quality.run's default
PEER_GRIDS = ("task_arithmetic", "ties", "tsv", "tsv_disentangled", "wudi_adam", "wudi_exact", "iso_c", "iso_cts")
# awd's row scope and combine (issue #14), with their references (COMBINE_COMMAND_GRIDS):
#   python -m benchmarks.quality.peers --grids task_arithmetic ties dare_ties della breadcrumbs_ties tsv \
#       tsv_disentangled iso_cts awd_tensor awd_row awd_ties awd_dare_ties awd_della awd_breadcrumbs_ties \
#       awd_row_tsv awd_iso_cts --output quality_combine
# iso_cts with its common-subspace share on the validation grid too (issue #15's 90 % target):
#   python -m benchmarks.quality.peers --grids iso_cts iso_cts_fraction --output quality_iso_fraction
# ACE-Merging (issue #28), its two corrected options and AWD in front of it, with the references:
#   python -m benchmarks.quality.peers --grids task_arithmetic ties iso_cts ace ace_uncentred \
#       ace_mean_covariance ace_eps awd_ace --output quality_ace
TUNED_GRIDS = ("iso_cts_fraction",)
ACE_GRIDS = ("ace", "ace_uncentred", "ace_mean_covariance", "ace_eps", "awd_ace")
TITLES = {"quality_peers": "Data-free peers", "quality_combine": "AWD row scope and combine",
          "quality_iso_fraction": "Iso-CTS with its common-subspace share chosen on validation",
          "quality_ace": "ACE-Merging, its options, its ridge ε and AWD in front of it"}
COMBINE_GRIDS = ("dare_ties", "della", "breadcrumbs_ties", "awd_tensor", "awd_row", "awd_ties", "awd_dare_ties",
                 "awd_della", "awd_breadcrumbs_ties", "awd_row_tsv", "awd_iso_cts")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", nargs="+", default=list(PEER_GRIDS), choices=PEER_GRIDS + COMBINE_GRIDS + TUNED_GRIDS + ACE_GRIDS,
                        help="which method grids to run (wudi_adam takes ~5 min per merge at 300 Adam steps, "
                             "more with select: matrices)")
    parser.add_argument("--output", default="quality_peers",
                        help="results file stem in benchmarks/results (default quality_peers)")
    parser.add_argument("--render", action="store_true",
                        help="only write OUTPUT.md again from the committed OUTPUT.json (no merges)")
    args = parser.parse_args(argv)
    from benchmarks.quality.paths import RESULTS_DIR

    if args.render:
        results = json.loads((RESULTS_DIR / f"{args.output}.json").read_text())
        return write_markdown(results, args.output)
    started = time.perf_counter()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import transformers

    transformers.utils.logging.disable_progress_bar()
    from benchmarks.quality.experiment import Benchmark, merge_code_version
    from benchmarks.quality.grids import all_grids
    from benchmarks.quality.merging import registered_methods
    from benchmarks.quality.models import ensure_finetunes, ensure_pretrained_encoder
    from benchmarks.quality.results import grid_entry, method_entry
    from benchmarks.quality.run import log
    from benchmarks.quality.selection import best_point, run_grid
    from benchmarks.quality.setup_data import ensure_data_sources, pretrained_model_path
    from benchmarks.quality.tasks import TASK_NAMES

    ensure_data_sources()
    tasks = list(TASK_NAMES)
    bench = Benchmark(tasks, ensure_finetunes(tasks), ensure_pretrained_encoder(), pretrained_model_path(),
                      validation_per_task=VALIDATION_PER_TASK)
    individual = {split: bench.individual_scores(split) for split in ("validation", "test")}
    methods: Dict[str, Any] = {}
    grids: Dict[str, Any] = {}
    for grid in (g for g in all_grids(registered_methods()) if g.name in args.grids):
        points = run_grid(bench, grid, individual["validation"], log)
        chosen = best_point(points)
        final = bench.final(chosen.spec, tasks, ("test",), check_lambda_path=True)
        methods[grid.name] = method_entry(final, chosen, individual["test"], tasks)
        grids[grid.name] = {"lambdas": list(grid.lambdas), "points": grid_entry(points)}
        log(f"[test] {grid.name} {chosen.spec.label()}: test normalized {methods[grid.name]['normalized_avg']:.4f}")
    command = f"python -m benchmarks.quality.peers --grids {' '.join(args.grids)} --output {args.output}"
    results = {"individual": individual["test"], "methods": methods, "validation_grid": grids,
               "settings": {"threads": torch.get_num_threads(), "merge_code": merge_code_version(),
                            "command": command, "seconds": round(time.perf_counter() - started)}}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{args.output}.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results, args.output)
    bench.cleanup()
    return results


def write_markdown(results: Dict[str, Any], output: str) -> Dict[str, Any]:
    """OUTPUT.md from the results mapping: the main table and, for a run holding AWD rows, the
    sections of ``combine_report`` (per-task scores, AWD + X − X, mean |cos|, targets)."""
    from benchmarks.quality.combine_report import combine_sections, is_awd_variant
    from benchmarks.quality.paths import RESULTS_DIR
    from benchmarks.quality.report import table

    methods, settings = results["methods"], results["settings"]
    rows = [[name, json.dumps(entry["params"]), f"{100 * entry['normalized_avg']:.1f}",
             f"{100 * entry['validation_normalized_avg']:.1f}", f"{100 * entry['avg']:.1f}", f"{entry['merge_seconds']:.0f}"]
            for name, entry in sorted(methods.items(), key=lambda item: -item[1]["normalized_avg"])]
    lines = [f"# {TITLES.get(output, 'Method grids')} on the MiniLM benchmark", "",
             f"Command: `{settings.get('command', 'python -m benchmarks.quality.peers')}` "
             f"({settings.get('seconds', 'time not recorded in the JSON')} s, code `{settings['merge_code']}`). Six MiniLM "
             "fine-tunes (README \"Merge quality\"); every merge through the `mergekit-awd` CLI; λ and the "
             "configuration chosen on the validation split, test reported. Normalized accuracy: merged / individual "
             "fine-tune, averaged over the six tasks.", "",
             *table(["method", "chosen configuration", "test normalized %", "validation normalized %", "test avg %",
                    "merge s"], rows), ""]
    if any(is_awd_variant(name, entry) for name, entry in methods.items()):
        lines += combine_sections(results, list(results["individual"]))
    (RESULTS_DIR / f"{output}.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return results


if __name__ == "__main__":
    main()
