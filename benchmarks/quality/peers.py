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
import time
from typing import Any, Dict, Optional, Sequence

from benchmarks.harness.runner import offline_environment

offline_environment()

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
    from benchmarks.harness.runner import prepare_run

    started = prepare_run()
    import torch

    from benchmarks.harness.experiment import merge_code_version
    from benchmarks.harness.merging import registered_methods
    from benchmarks.harness.runner import method_tables, run_methods, write_json
    from benchmarks.quality.experiment import six_task_benchmark
    from benchmarks.quality.grids import all_grids
    from benchmarks.text_tasks.setup_data import ensure_data_sources

    ensure_data_sources()
    bench = six_task_benchmark(VALIDATION_PER_TASK)
    individual = {split: bench.individual_scores(split) for split in ("validation", "test")}
    grids = [g for g in all_grids(registered_methods()) if g.name in args.grids]
    methods, grid_points = method_tables(run_methods(bench, grids, individual, brief=True))
    command = f"python -m benchmarks.quality.peers --grids {' '.join(args.grids)} --output {args.output}"
    results = {"individual": individual["test"], "methods": methods, "validation_grid": grid_points,
               "settings": {"threads": torch.get_num_threads(), "merge_code": merge_code_version(),
                            "command": command, "seconds": round(time.perf_counter() - started)}}
    write_json(RESULTS_DIR / f"{args.output}.json", results)
    write_markdown(results, args.output)
    bench.cleanup()
    return results


def write_markdown(results: Dict[str, Any], output: str) -> Dict[str, Any]:
    """OUTPUT.md from the results mapping: the main table and, for a run holding AWD rows, the
    sections of ``combine_report`` (per-task scores, AWD + X − X, mean |cos|, targets)."""
    from benchmarks.quality.combine_report import combine_sections, is_awd_variant
    from benchmarks.quality.paths import RESULTS_DIR
    from benchmarks.harness.report import table

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
