"""``python -m benchmarks.index [--check]``: write benchmarks/INDEX.md, one row per benchmark command.

Every module under benchmarks/ with a ``main`` or a ``__main__`` block is a command (``COMMANDS``
holds each one's description, results files, how its runtime is read and what it caches; the test
``tests/test_benchmark_index.py`` fails when a command module is missing here).  The runtime column
is read from the committed results files only: the run's own seconds where the file records them,
else the sum of the timed parts it records (marked as such, a lower bound of the run), else
"not recorded".  ``--check``: exit 1 when INDEX.md differs from what this would write.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from benchmarks.quality.results_files import CANONICAL

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
RESULTS = BENCHMARKS / "results"
INDEX = BENCHMARKS / "INDEX.md"
NOT_RECORDED = "not recorded"


# -- reading runtimes from the results files ------------------------------------------------------
def _load(stem: str) -> Optional[Dict[str, Any]]:
    path = RESULTS / f"{stem}.json"
    return json.loads(path.read_text()) if path.exists() else None


def duration(seconds: float) -> str:
    """1234 -> "1234 s (21 min)"; under 90 s the seconds alone."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds:.0f} s ({seconds / 60:.0f} min)"
    return f"{seconds:.0f} s ({seconds / 3600:.1f} h)"


def _numbers(values: Iterable[Any]) -> float:
    """Sum of the numbers in a nest of lists (a method's seconds per round)."""
    total = 0.0
    for value in values:
        total += _numbers(value) if isinstance(value, list) else float(value)
    return total


def _timed(total: float, what: str) -> str:
    return f"≥ {duration(total)} ({what}; the rest not recorded)"


def run_seconds(*stems: str) -> str:
    """``settings.seconds`` of each results file (the run's own wall time)."""
    parts = []
    for stem in stems:
        data = _load(stem)
        seconds = (data or {}).get("settings", {}).get("seconds")
        parts.append(f"{stem}: {NOT_RECORDED if seconds is None else duration(seconds)}")
    return "; ".join(parts)


def quality_track() -> str:
    """The MiniLM run's seconds (every row of the track, one run)."""
    seconds = (_load(CANONICAL) or {}).get("settings", {}).get("seconds")
    return NOT_RECORDED if seconds is None else duration(seconds)


def _layerwise_cost() -> str:
    data = _load("layerwise_cost")
    return NOT_RECORDED if data is None else duration(data["seconds_total"])


def llm_track() -> str:
    data = _load("llm_quality")
    if data is None:
        return NOT_RECORDED
    settings = data["settings"]
    finetunes = sum(record["seconds"] for record in data["finetunes"].values())
    text = (f"{duration(settings['seconds'])} with the fine-tunes cached (+ {duration(finetunes)} to fine-tune "
            f"the {len(data['finetunes'])}, llm_quality.json `finetunes`)")
    for update in settings.get("updates", []):
        text += f"; `{update['command'].removeprefix('python -m ')}`: {duration(update['seconds'])}"
    return text


def llm_finetunes() -> str:
    data = _load("llm_quality")
    if data is None:
        return NOT_RECORDED
    return f"{duration(sum(r['seconds'] for r in data['finetunes'].values()))} (llm_quality.json `finetunes`)"


def row_sum(stem: str, key: str, what: str) -> str:
    """The sum of ``key`` over a results file's ``methods`` rows."""
    data = _load(stem)
    if data is None:
        return NOT_RECORDED
    rows = data["methods"].values()
    return _timed(sum(row[key] for row in rows if row.get(key) is not None), f"{what}, {len(rows)} rows")


def per_row_range(stem: str, key: str) -> str:
    data = _load(stem)
    if data is None:
        return NOT_RECORDED
    values = [row[key] for row in data["methods"].values() if row.get(key) is not None]
    return f"{duration(min(values))} to {duration(max(values))} per method (`{key}`; one run per row)"


def scoring_speed() -> str:
    data = _load("llm_scoring_speed")
    if data is None:
        return NOT_RECORDED
    return _timed(data["seconds_plain"] + data["seconds_shared"], "the scoring timed, both settings")


def transcript() -> str:
    path = ROOT / "docs" / "smollm2_transcript.md"
    walls = [int(s) for s in re.findall(r"\[exit \d+, (\d+) s wall\]", path.read_text())] if path.exists() else []
    return _timed(sum(walls), f"the {len(walls)} commands' wall times in the transcript") if walls else NOT_RECORDED


def timed_parts(extract: Callable[[Dict[str, Any]], float], what: str, *stems: str) -> Callable[[], str]:
    """A runtime reader: ``extract(results)`` summed timed parts of each file."""
    def read() -> str:
        parts = []
        for stem in stems:
            data = _load(stem)
            parts.append(f"{stem}: {NOT_RECORDED if data is None else _timed(extract(data), what)}")
        return "; ".join(parts)
    return read


def _awd_speed(data: Dict[str, Any]) -> float:
    return _numbers(r["seconds"] for runs in data["runs"].values() for r in runs) + \
        data["solver"]["reduced_seconds"] + data["solver"]["direct_seconds"]


def _digest_cost(data: Dict[str, Any]) -> float:
    keys = ("merge_seconds", "cli_merge_seconds", "digest_seconds", "verify_seconds", "sha256_seconds")
    return sum(run[k] for run in data["runs"] for k in keys)


def _peer_speed(data: Dict[str, Any]) -> float:
    adam = data.get("wudi_adam", {}).get("per_tensor", {})
    return _numbers(data["runs"].values()) + sum(entry["seconds"] for entry in adam.values())


def _tsv_speed(data: Dict[str, Any]) -> float:
    return sum(run["seconds"] for family in data["results"].values() for run in family["runs"].values())


def gpu_check() -> str:
    logs = sorted((RESULTS / "gpu_check").glob("gpu_check*.log"))
    if not logs:
        return NOT_RECORDED
    steps = [int(s) for s in re.findall(r"^== .*: exit \d+ after (\d+) s$", logs[-1].read_text(), re.M)]
    return f"{NOT_RECORDED} here (a GPU run: {duration(sum(steps))} over {len(steps)} steps, {logs[-1].name})"


def not_recorded() -> str:
    return NOT_RECORDED


# -- the commands ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    module: str                      # python -m MODULE (or the script's path for a shell script)
    measures: str
    results: Tuple[str, ...]         # files under benchmarks/results (or repository paths with a "/")
    runtime: Callable[[], str]
    cached: str
    alias: str = ""                  # another way to run it

    def command(self) -> str:
        text = f"`bash {self.module}`" if self.module.endswith(".sh") else f"`python -m {self.module}`"
        return text + (f" (`{self.alias}`)" if self.alias else "")


CACHE_Q = ("yes: fine-tunes in ~/.cache/mergekit-awd/benchmarks/finetunes, merges and scores in .cache/merges/records.json "
           "(keyed by configuration, λ, split, fine-tunes and `merge_code_version`): an interrupted run resumes")
CACHE_L = ("yes: base and fine-tunes in ~/.cache/mergekit-awd/benchmarks/llm, merges and scores in .cache/llm/merges/records.json "
           "(keyed as the MiniLM track's): an interrupted run resumes")
INPUTS_134M = "inputs built once (~/.cache/mergekit-awd/benchmarks/llama134m_bf16); every measurement runs again"
NOTHING = "no"
QUALITY_PNG = ("accuracy_per_method.png", "accuracy_vs_k.png", "accuracy_vs_lambda.png", "awd_cosines.png")

COMMANDS: Tuple[Command, ...] = (
    Command("benchmarks.quality.run", "MiniLM track: six fine-tunes merged by every method of "
            "`quality.grids.all_grids` (every row of the track in one file, with the code version), λ and "
            "configuration chosen on validation, test accuracy; AWD diagnostics; accuracy vs number of merged "
            "tasks; paired intervals (vs ties, task_arithmetic, the best row, AWD + X vs X); `--render` redraws them "
            "from the JSON's per-example results and rewrites quality.md; `--grids …` (development) runs chosen grids into "
            "~/.cache/mergekit-awd/benchmarks/quality_grids.*",
            ("quality.json", "quality.md", *QUALITY_PNG),
            quality_track, CACHE_Q, "./run.sh quality"),
    Command("benchmarks.quality.tune_check", "`mergekit_awd.tune_merge` with the MiniLM scorer against the "
            "benchmark's validation choice", ("quality_tune_check.*",),
            lambda: row_sum("quality_tune_check", "seconds", "the rows' seconds"),
            "references from the MiniLM record cache; tune's folders cleared per method, results written at the end"),
    Command("benchmarks.llm.run", "Causal-LM track: SmolLM2-135M fine-tunes merged by every method (bfloat16), "
            "test accuracy and perplexity, paired intervals (vs ties, task_arithmetic, the best row, AWD + X vs X); "
            "`--methods … --update` adds rows at the file's code version only; `--render` redraws the intervals "
            "from the file's per-example results",
            ("llm_quality.json", "llm_quality.md", "llm_accuracy_per_method.png", "llm_accuracy_vs_lambda.png",
             "llm_awd_cosines.png"), llm_track, CACHE_L, "./run.sh llm-quality"),
    Command("benchmarks.llm.tune_check", "`mergekit-awd tune` on the LLM track's validation split against the "
            "benchmark's choice (λ, bit-identical `--merge`, cost)", ("llm_tune_check.*",),
            lambda: per_row_range("llm_tune_check", "tune_seconds"),
            "rows written after each method, earlier runs' rows kept; needs the track's cached fine-tunes"),
    Command("benchmarks.llm.bench_scoring", "the LM evaluator's shared-prefix batching: tokens, seconds, equal "
            "accuracies", ("llm_scoring_speed.*",), scoring_speed, "uses the track's cached base and fine-tunes"),
    Command("benchmarks.llm.transcript", "`mergekit-awd` on the SmolLM2 family as a user runs it (unedited output)",
            ("docs/smollm2_transcript.md",), transcript, "needs the track's cached base and fine-tunes"),
    Command("benchmarks.llm.base_model", "builds the dequantised SmolLM2-135M-Instruct base folder", (),
            not_recorded, "yes: ~/.cache/mergekit-awd/benchmarks/llm/base, built once"),
    Command("benchmarks.llm.models", "builds the base and the four fine-tunes of the LLM track", (),
            llm_finetunes, "yes: one folder per fine-tune, resumes at the first unfinished one"),
    Command("benchmarks.llm_hard.run", "hard LLM track (#27): eight tasks, every method, per-example results, "
            "paired bootstrap intervals, K sweep", ("llm_hard.*", "llm_hard_k_sweep.png"), lambda: run_seconds("llm_hard"),
            "yes: fine-tunes, merges and scored points (records.json), keyed by configuration and code version"),
    Command("benchmarks.speed.bench_layerwise_cost", "layer-wise tuning (tune --layerwise) on SmolLM2-135M, K = 8 "
            "stand-in fine-tunes, 1024 lines: seconds and peak memory", ("layerwise_cost.*",),
            lambda: _layerwise_cost(), "stand-in fine-tunes cached in ~/.cache/mergekit-awd/benchmarks/layerwise_cost"),
    Command("benchmarks.llm_hard.bench_score_dtype", "the hard track's scorer in float32 vs bfloat16: ms per line, "
            "accuracies", ("score_dtype.*",), lambda: run_seconds("score_dtype"),
            "no (uses the hard track's cached base and fine-tunes)"),
    Command("benchmarks.llm_hard.models", "builds the eight strong fine-tunes of the hard LLM track (#27)", (),
            not_recorded, "yes: one folder per fine-tune, a killed one resumes from its checkpoint (every 20 steps)"),
    Command("benchmarks.speed.bench_awd_speed", "`awd` (tensor, model, row, combine ties) time and peak RSS vs "
            "task_arithmetic on a ~134M LLaMA; reduced vs direct solver", ("awd_speed.*",),
            timed_parts(_awd_speed, "merges and solver timed", "awd_speed"), INPUTS_134M),
    Command("benchmarks.speed.bench_digest_cost", "cost of the completion marker's file digests vs the merge",
            ("digest_cost.*",), timed_parts(_digest_cost, "rounds timed", "digest_cost"), INPUTS_134M),
    Command("benchmarks.speed.bench_estimates", "constants of the up-front time estimate and the estimate "
            "against measured merges", ("estimates.*",),
            timed_parts(lambda d: sum(c["measured_seconds"] for c in d["checks"]), "check merges timed", "estimates"),
            "uses the LLM track's family when cached; constants measured every run"),
    Command("benchmarks.speed.bench_llm_scale", "per-tensor time and memory at Llama-3-8B shapes, K = 2, 4, 8, "
            "extrapolated to a whole 8B merge", ("llm_scale.*", "llm_scale_ace.*"),
            timed_parts(lambda d: sum(r["seconds"] for r in d["rows"]), "calls timed", "llm_scale", "llm_scale_ace"),
            "no (results written after each row, so a stopped run keeps its rows)"),
    Command("benchmarks.speed.bench_memory_1b", "peak RSS of `awd`/`tsv` vs task_arithmetic on a 1.03B LLaMA, "
            "K = 4", ("memory_1b.*",),
            timed_parts(lambda d: sum(r["seconds"] for r in d["runs"].values()), "merges timed", "memory_1b"),
            "inputs built once (~/.cache/mergekit-awd/benchmarks, ~10 GB); every merge runs again"),
    Command("benchmarks.speed.bench_peer_speed", "merge time of the data-free peers (iso_c, iso_cts, wudi, ace) vs "
            "task_arithmetic; `--device cuda` on a GPU", ("peer_speed.*", "peer_speed_adam.*", "peer_speed_ace.*"),
            timed_parts(_peer_speed, "merges timed", "peer_speed", "peer_speed_adam", "peer_speed_ace"),
            INPUTS_134M),
    Command("benchmarks.speed.bench_tsv_speed", "`tsv` exact vs lowrank: time ratio to task_arithmetic and the "
            "error of lowrank", ("tsv_speed.*", "tsv_speed_threads2.*"),
            timed_parts(_tsv_speed, "merges timed", "tsv_speed", "tsv_speed_threads2"),
            "inputs built once (~/.cache/mergekit-awd/benchmarks/tsv_speed_family*); every merge runs again"),
    Command("benchmarks.speed.bench_tune_identity", "what `tune`'s content digests of its inputs cost",
            ("tune_identity.*",),
            timed_parts(lambda d: _numbers(d["seconds"].values()), "rounds timed", "tune_identity"),
            "uses the LLM track's cached folders (or stand-ins, built once)"),
    Command("benchmarks.speed.awd_convergence", "AWD's objective after N solver steps on the MiniLM fine-tunes",
            ("awd_convergence.*",), not_recorded, "needs the MiniLM track's cached fine-tunes"),
    Command("benchmarks.speed.gpu_merge_check", "`--cuda` merges of a SmolLM2-shaped family against the CPU merge "
            "(prints a table; step 3 of gpu_check.sh)", (), not_recorded, NOTHING),
    Command("benchmarks.speed._measured_child", "internal: the child process of `measure.run_measured` (records "
            "its peak RSS); not run by hand", (), not_recorded, NOTHING),
    Command("benchmarks/gpu_check.sh", "the GPU check: CUDA tests, LLM-scale and peers' speed on cuda, "
            "gpu_merge_check", ("gpu_check/",), gpu_check, NOTHING),
    Command("benchmarks.experiments.profile_tsv_tensor", "experiment: cProfile of one TSV-M tensor merge (prints)",
            (), not_recorded, NOTHING),
    Command("benchmarks.experiments.solver_cost", "experiment: one-thread cost of awd's row solve and wudi exact "
            "(prints)", (), not_recorded, NOTHING),
    Command("benchmarks.experiments.tsv_gram_topk_experiment", "experiment: TSV-M top-k from a Gram "
            "eigendecomposition (prints; not adopted)", (), not_recorded, NOTHING),
    Command("benchmarks.experiments.wudi_input_rounding", "experiment: WUDI exact on float32 vs bfloat16-rounded "
            "task vectors of the LLM track", ("wudi_input_rounding.*",), not_recorded,
            "needs the LLM track's cached fine-tunes"),
    Command("benchmarks.readme_tables", "not a benchmark: README.md's generated tables from the results "
            "(`--check`)", (), not_recorded, NOTHING),
    Command("benchmarks.index", "not a benchmark: writes this page (`--check`)", (), not_recorded, NOTHING),
)


# -- the page -------------------------------------------------------------------------------------
def command_modules(root: Path = BENCHMARKS) -> List[str]:
    """Every module under benchmarks/ with a ``main`` function or a ``__main__`` block."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if ".cache" in path.parts:
            continue
        text = path.read_text()
        if re.search(r"^def main\(", text, re.M) or 'if __name__ == "__main__"' in text:
            found.append(".".join(path.relative_to(root.parent).with_suffix("").parts))
    return found


def results_cell(results: Sequence[str]) -> str:
    if not results:
        return "none"
    cells = []
    for name in results:
        path = ROOT / name if "/" in name.rstrip("/") else RESULTS / name
        present = path.exists() or any(RESULTS.glob(name))
        cells.append(f"`{name}`" + ("" if present else " (not committed)"))
    return ", ".join(cells)


def render() -> str:
    lines = ["# Benchmark commands", "",
             "Generated by `python -m benchmarks.index` from the committed results files (do not edit by hand; "
             "`tests/test_benchmark_index.py` checks that it is current and lists every command module). Run "
             "each from the repository root. Results files are in benchmarks/results/. Runtime: what the "
             "results file records on the 2-core machine; \"≥\" marks a sum of the timed parts it records "
             "(model building, start-up and set-up excluded), \"not recorded\" a file that records no time.", "",
             "| command | what it measures | results | runtime (2-core machine, as recorded) | resumable / cached |",
             "| --- | --- | --- | --- | --- |"]
    for command in COMMANDS:
        lines.append(f"| {command.command()} | {command.measures} | {results_cell(command.results)} | "
                     f"{command.runtime()} | {command.cached} |")
    lines += ["", "Layout: `harness/` (the experiment protocol both quality tracks share), `text_tasks/` (the six "
              "text tasks and their data sources), `quality/` (MiniLM track), `llm/` (SmolLM2 causal-LM track), "
              "`speed/` (speed and memory scripts, `measure.py`), `experiments/` (one-off measurements), "
              "`common.py` (paths, `save_results`), `results/` (committed results).", ""]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when INDEX.md is not what this would write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = INDEX.read_text() if INDEX.exists() else ""
        if current != text:
            print(f"{INDEX.relative_to(ROOT)} is out of date: run python -m benchmarks.index", file=sys.stderr)
            return 1
        return 0
    INDEX.write_text(text)
    print(f"wrote {INDEX.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
