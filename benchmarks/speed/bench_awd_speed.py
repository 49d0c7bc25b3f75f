"""Speed and memory of `awd` against mergekit's `task_arithmetic`, measured in one run.

    python -m benchmarks.speed.bench_awd_speed [--rounds 2] [--threads 2] [--cache ~/.cache/mergekit-awd/benchmarks]

Builds (once, cached outside git) a ~134M-parameter LLaMA-shaped base and 3 fine-tunes in
bfloat16, then runs each merge as its own `mergekit-awd` process, alternating methods over
``--rounds`` rounds, and records wall time and the child's peak RSS (its VmHWM,
``benchmarks.speed.measure.run_measured``).  Reports the best round of each method as a ratio to task_arithmetic, and the time of the
`reduced` solver against the `direct` one on one large tensor at the same δ (plain gradient
descent, where both give the same iterates).  Writes benchmarks/results/awd_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks.common import CACHE, save_results
from benchmarks.speed.measure import METHODS, build_inputs, machine_info, measure_merge, write_merge_config


# the common methods, plus row scope (issue #14: ≤ 1.3× task_arithmetic) and AWD in front of TIES
# beside mergekit's ties (what combine adds to X)
SPEED_METHODS = {
    **METHODS,
    "awd_row": {"merge_method": "awd", "parameters": {"lambda": 0.5, "scope": "row"}},
    "ties": {"merge_method": "ties", "parameters": {"density": 0.5}},
    "awd_combine_ties": {"merge_method": "awd", "parameters": {"combine": "ties", "density": 0.5}},
}
TARGETS = {"task_arithmetic": "reference", "awd_tensor": "≤ 1.2× time, ≤ 1.3× RSS", "awd_model": "≤ 2.2× time",
           "awd_row": "≤ 1.3× time", "ties": "(reference for combine)", "awd_combine_ties": "(vs ties: see text)"}


def solver_comparison(paths: List[Path], steps: int) -> Dict[str, float]:
    """reduced vs direct on the largest block matrix (down_proj of layer 0), plain GD."""
    from safetensors import safe_open

    from mergekit_awd.core.awd import SolverSettings, solve_reduced
    from mergekit_awd.core.awd_direct import solve_direct
    from mergekit_awd.core.task_vectors import gram_matrix, redundant_vector

    name = "model.layers.0.mlp.down_proj.weight"
    tensors = []
    for p in paths:
        with safe_open(str(p / "model.safetensors"), framework="pt") as handle:
            tensors.append(handle.get_tensor(name).float())
    task_vectors = torch.stack([t - tensors[0] for t in tensors[1:]])
    settings = SolverSettings(alpha=0.01, steps=steps, lr=0.05, optimizer="gd")
    start = time.perf_counter()
    reduced = solve_reduced(gram_matrix(task_vectors), settings)
    delta_reduced = redundant_vector(task_vectors, reduced.coefficients)
    reduced_seconds = time.perf_counter() - start
    start = time.perf_counter()
    direct = solve_direct(task_vectors, settings)
    direct_seconds = time.perf_counter() - start
    difference = float((delta_reduced - direct.delta).norm() / direct.delta.norm())
    return {
        "tensor": name,
        "elements": task_vectors[0].numel(),
        "K": task_vectors.shape[0],
        "steps": steps,
        "reduced_seconds": reduced_seconds,
        "direct_seconds": direct_seconds,
        "speedup": direct_seconds / reduced_seconds,
        "relative_difference_of_delta": difference,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300, help="GD steps for the solver comparison")
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--threads", type=int, default=2,
                        help="torch/OpenMP threads of every merge process (1 avoids OpenMP stalls on a busy machine)")
    args = parser.parse_args()
    load_at_start = os.getloadavg()[0]
    cache = Path(args.cache)
    paths = build_inputs(cache)
    work = cache / "speed_runs"
    work.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, List[Dict[str, float]]] = {name: [] for name in SPEED_METHODS}
    for round_index in range(args.rounds):
        for name, method in SPEED_METHODS.items():
            config = work / f"{name}.yml"
            write_merge_config(paths, method["merge_method"], method["parameters"], "bfloat16", config)
            result = measure_merge(config, work / f"out_{name}", threads=args.threads, jobs=args.threads)
            runs[name].append(result)
            print(f"round {round_index + 1} {name:16s} {result['seconds']:7.2f} s  "
                  f"peak RSS {result['peak_rss_mib']:8.1f} MiB", flush=True)
    best = {name: {"seconds": min(r["seconds"] for r in rs), "peak_rss_mib": min(r["peak_rss_mib"] for r in rs)}
            for name, rs in runs.items()}
    reference = best["task_arithmetic"]
    ratios = {name: {"time_ratio": b["seconds"] / reference["seconds"],
                     "rss_ratio": b["peak_rss_mib"] / reference["peak_rss_mib"]} for name, b in best.items()}
    solver = solver_comparison(paths, args.steps)
    results = {
        "machine": machine_info(threads_per_merge=args.threads, load_average_at_start=load_at_start),
        "model": "LLaMA-shaped, hidden 768, 12 layers, MLP 2048, vocab 32000, bfloat16, 3 fine-tunes",
        "runs": runs, "best": best, "ratios_to_task_arithmetic": ratios, "solver": solver,
        "targets": {"awd_tensor_time": 1.2, "awd_tensor_rss": 1.3, "awd_model_time": 2.2, "awd_row_time": 1.3,
                    "solver_speedup": 100},
    }
    lines = [
        "# awd speed and memory vs mergekit task_arithmetic",
        "",
        f"Command: `python -m benchmarks.speed.bench_awd_speed --rounds {args.rounds} --threads {args.threads}` "
        f"({os.cpu_count()} CPU cores, {args.threads} thread(s) per merge process, load average at start "
        f"{load_at_start:.1f}, torch {torch.__version__}). Best of {args.rounds} alternating rounds, "
        "each merge a fresh `mergekit-awd` process, peak RSS = its VmHWM; model: " + results["model"] + ".",
        "",
        "| method | wall s | peak RSS MiB | time ratio | RSS ratio | target |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, b in best.items():
        lines.append(f"| {name} | {b['seconds']:.2f} | {b['peak_rss_mib']:.0f} | {ratios[name]['time_ratio']:.2f} | "
                     f"{ratios[name]['rss_ratio']:.2f} | {TARGETS[name]} |")
    combine_over_ties = best["awd_combine_ties"]["seconds"] / best["ties"]["seconds"]
    results["combine_ties_over_ties"] = combine_over_ties
    lines += [
        "",
        f"`awd` with `combine: ties` (density 0.5) against mergekit's `ties` (density 0.5): "
        f"{combine_over_ties:.2f}× the time.",
        "",
        f"Solver on one tensor ({solver['tensor']}, {solver['elements']:,} elements, K = {solver['K']}, "
        f"{solver['steps']} GD steps): reduced {solver['reduced_seconds']:.3f} s, direct {solver['direct_seconds']:.2f} s, "
        f"**{solver['speedup']:.0f}× faster** (target ≥ 100×); relative difference of δ {solver['relative_difference_of_delta']:.1e}.",
        "",
    ]
    save_results("awd_speed", results, lines)


if __name__ == "__main__":
    main()
