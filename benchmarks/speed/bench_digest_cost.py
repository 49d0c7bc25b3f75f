"""What the completion marker's file digests cost, relative to the merge that writes them.

    python -m benchmarks.speed.bench_digest_cost [--method task_arithmetic|awd] [--rounds 3] [--threads 2]
    python -m benchmarks.speed.bench_digest_cost --small      (tiny model: checks that the script works)

Uses the speed benchmark's model (``benchmarks.speed.measure.build_inputs``: a ~134M-parameter
LLaMA-shaped base and 3 fine-tunes in bfloat16, cached in ~/.cache/mergekit-awd/benchmarks) and its merge configuration
(``benchmarks.speed.measure.write_merge_config``).  Each round runs one merge end to end in this process
through ``mergekit_awd.pipeline.runner.run_merge`` (which writes the marker, digests included), then times
``write_completion_marker`` alone on the finished output (the digest of every file) and
``check_finished_output`` (what ``mergekit-awd upload`` verifies).  The output was just written,
so its files are in the page cache: this is the cost of hashing, not of reading a cold disk.
Writes benchmarks/results/digest_cost.{json,md} (``--small``: digest_cost_small.*) with the ratio
digest time / merge time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import time
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local models only, as the speed benchmark's merges

import torch  # noqa: E402

from benchmarks.common import CACHE, save_results  # noqa: E402
from benchmarks.speed.measure import (  # noqa: E402
    METHODS, build_inputs, cached_family, machine_info, measure_merge, write_merge_config,
)
from mergekit_awd.pipeline.output_layout import (  # noqa: E402
    COMPLETION_MARKER,
    check_finished_output,
    folder_files,
    write_completion_marker,
)
from mergekit_awd.pipeline.runner import run_merge  # noqa: E402

# The merges this benchmark can time: the cheapest (the worst case for the ratio) and awd.
CHOICES = {"task_arithmetic": "task_arithmetic", "awd": "awd_tensor"}


def small_inputs(cache: Path) -> List[Path]:
    """The tests' tiny LLaMA family (a few hundred kB), built once in the cache."""
    return cached_family(cache / "tiny_bf16", "the tests' tiny LLaMA family", dtype=torch.bfloat16)


def one_round(config: Path, out: Path, threads: int) -> Dict[str, float]:
    if out.exists():
        shutil.rmtree(out)
    options = {"copy_tokenizer": False, "quiet": True, "num_threads": threads}
    start = time.perf_counter()
    run_merge(str(config), out, options=options)
    merge_seconds = time.perf_counter() - start
    marker = json.loads((out / COMPLETION_MARKER).read_text())
    info = {k: v for k, v in marker.items() if k not in ("format", "files", "weights")}
    start = time.perf_counter()
    write_completion_marker(str(out), info)
    digest_seconds = time.perf_counter() - start
    start = time.perf_counter()
    check_finished_output(str(out))
    verify_seconds = time.perf_counter() - start
    files = folder_files(str(out))
    start = time.perf_counter()
    for name in files:  # the same files through SHA-256, for comparison (not used by the marker)
        with open(out / name, "rb") as handle:
            hashlib.file_digest(handle, "sha256")
    sha256_seconds = time.perf_counter() - start
    cli_seconds = measure_merge(config, out.with_name("out_cli"), threads=threads, jobs=threads)["seconds"]
    return {
        "merge_seconds": merge_seconds,
        "cli_merge_seconds": cli_seconds,
        "digest_seconds": digest_seconds,
        "verify_seconds": verify_seconds,
        "sha256_seconds": sha256_seconds,
        "files": len(files),
        "bytes": sum(os.path.getsize(out / name) for name in files),
    }


def summarise(runs: List[Dict[str, float]]) -> Dict[str, float]:
    """Best (and median merge) seconds over the rounds, the ratios to the merge, the digest's speed."""
    merge = min(r["merge_seconds"] for r in runs)
    digest = min(r["digest_seconds"] for r in runs)
    verify = min(r["verify_seconds"] for r in runs)
    cli = min(r["cli_merge_seconds"] for r in runs)
    sha256 = min(r["sha256_seconds"] for r in runs)
    size = runs[-1]["bytes"]
    return {
        "merge_seconds_best": merge,
        "merge_seconds_median": statistics.median(r["merge_seconds"] for r in runs),
        "digest_seconds_best": digest,
        "verify_seconds_best": verify,
        "cli_merge_seconds_best": cli,
        "sha256_seconds_best": sha256,
        "digest_to_merge_ratio": digest / merge,
        "digest_to_cli_merge_ratio": digest / cli,
        "sha256_to_merge_ratio": sha256 / merge,
        "verify_to_merge_ratio": verify / merge,
        "digest_mib_per_second": size / 2**20 / digest if digest else float("inf"),
        "output_bytes": size,
        "output_files": runs[-1]["files"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(CHOICES), default="task_arithmetic")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads of the merge")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--small", action="store_true",
                        help="the tests' tiny model instead of the ~134M one (a check that the script runs)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    paths = small_inputs(cache) if args.small else build_inputs(cache)
    work = cache / "digest_runs"
    work.mkdir(parents=True, exist_ok=True)
    method = METHODS[CHOICES[args.method]]
    config = work / f"{args.method}.yml"
    write_merge_config(paths, method["merge_method"], method["parameters"], "bfloat16", config)
    load_at_start = os.getloadavg()[0]
    runs = []
    for index in range(args.rounds):
        result = one_round(config, work / "out", args.threads)
        runs.append(result)
        print(f"round {index + 1}: merge {result['merge_seconds']:7.2f} s  CLI merge {result['cli_merge_seconds']:7.2f} s  "
              f"digest {result['digest_seconds']:6.3f} s  sha256 {result['sha256_seconds']:6.3f} s  "
              f"verify {result['verify_seconds']:6.3f} s  ({result['files']} files, "
              f"{result['bytes'] / 2**20:.1f} MiB)", flush=True)
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.rmtree(work / "out_cli", ignore_errors=True)

    summary = summarise(runs)
    merge, digest, verify, cli, sha256 = (summary[f"{part}_seconds_best"]
                                          for part in ("merge", "digest", "verify", "cli_merge", "sha256"))
    size = summary["output_bytes"]
    model = ("the tests' tiny LLaMA (hidden 64, 2 layers), bfloat16, 3 fine-tunes" if args.small else
             "LLaMA-shaped, hidden 768, 12 layers, MLP 2048, vocab 32000, bfloat16, 3 fine-tunes")
    results = {
        "machine": machine_info(threads=args.threads, load_average_at_start=load_at_start),
        "model": model, "method": args.method, "parameters": method["parameters"], "rounds": args.rounds,
        "runs": runs, "summary": summary,
    }
    name = "digest_cost_small" if args.small else "digest_cost"
    command = "python -m benchmarks.speed.bench_digest_cost" + (" --small" if args.small else "") + \
        f" --method {args.method} --rounds {args.rounds} --threads {args.threads}"
    lines = [
        "# Cost of the completion marker's digests (XXH3-128)",
        "",
        f"Command: `{command}` ({os.cpu_count()} CPU cores, {args.threads} torch thread(s), load average at "
        f"start {load_at_start:.1f}, torch {torch.__version__}, Python {platform.python_version()}). "
        f"Model: {model}. Best of {args.rounds} rounds; each round is one `run_merge` in this process "
        "(end to end, marker included), then `write_completion_marker` alone on the finished output, then "
        "`check_finished_output` (what `upload` verifies), then the same files through SHA-256 (for comparison), "
        "then the same merge as the speed benchmark times it (`benchmarks.speed.measure.measure_merge`: a fresh "
        "`mergekit-awd` process, what a user waits for). The output's files are in the page cache. "
        "Target (issue #10): digest ≤ 5 % of the merge wall time.",
        "",
        "| merge | output | merge s (in process) | merge s (CLI process) | digest s | verify s | "
        "digest / merge (in process) | digest / merge (CLI) | digest MiB/s | SHA-256 s | SHA-256 / merge (in process) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {args.method} | {summary['output_files']} files, {size / 2**20:.1f} MiB | {merge:.2f} | {cli:.2f} | "
        f"{digest:.3f} | {verify:.3f} | {summary['digest_to_merge_ratio']:.3f} | "
        f"{summary['digest_to_cli_merge_ratio']:.3f} | {summary['digest_mib_per_second']:.0f} | {sha256:.3f} | "
        f"{summary['sha256_to_merge_ratio']:.3f} |",
        "",
    ]
    save_results(name, results, lines)


if __name__ == "__main__":
    main()
