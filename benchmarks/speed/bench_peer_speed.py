"""Speed of the data-free peers (``iso_c``, ``iso_cts``, ``wudi``) against ``task_arithmetic`` and ``tsv``.

    python -m benchmarks.speed.bench_peer_speed [--rounds 1] [--threads 2] [--adam-steps 300]

The speed benchmark's model (``measure.build_inputs``: ~134M-parameter LLaMA-shaped bfloat16 base
and 3 fine-tunes; 84 selected block matrices of 768×768, 768×2048 and 2048×768) merged by each
method as a fresh ``mergekit-awd`` process, alternating methods over ``--rounds`` rounds, best
round reported as a ratio to task_arithmetic.  ``wudi`` with the reference's Adam (300 steps per
tensor) takes minutes on 2 CPU cores, so by default it is not run whole: its per-tensor time is
measured on one tensor of each shape (``wudi_merge_matrices``, default settings) and the
whole-model figure is that times the tensor count plus task_arithmetic's time, marked as an
estimate.  Writes benchmarks/results/peer_speed.{json,md}.  ``--methods wudi_exact wudi_adam
--output peer_speed_adam`` runs wudi's Adam whole instead (the other rows of ``--device cuda``,
awd_tensor and awd_row, can be asked for the same way).

``--device cuda`` runs every merge with ``--cuda`` and adds ``wudi`` with Adam (run whole, not
estimated) and ``awd`` at scopes tensor and row (the batched row solve on the GPU); it writes
benchmarks/results/peer_speed_cuda.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Tuple

from benchmarks.common import CACHE, save_results
from benchmarks.speed.measure import build_inputs, machine_info, measure_merge, write_merge_config

METHODS = {
    "task_arithmetic": {"merge_method": "task_arithmetic", "parameters": {"lambda": 1.0}},
    "tsv_exact": {"merge_method": "tsv", "parameters": {"svd": "exact"}},
    "iso_c": {"merge_method": "iso_c", "parameters": {}},
    "iso_cts": {"merge_method": "iso_cts", "parameters": {}},
    "wudi_exact": {"merge_method": "wudi", "parameters": {"solver": "exact"}},
    "ace": {"merge_method": "ace", "parameters": {}},
}
# --device cuda: every merge with --cuda, and the rows a GPU makes affordable (and wudi with Adam,
# run whole with --adam-steps steps: ``cuda_methods``)
CUDA_METHODS = {
    **METHODS,
    "awd_tensor": {"merge_method": "awd", "parameters": {"scope": "tensor"}},
    "awd_row": {"merge_method": "awd", "parameters": {"scope": "row"}},
}


def cuda_methods(adam_steps: int) -> Dict[str, Dict]:
    return {**CUDA_METHODS, "wudi_adam": {"merge_method": "wudi", "parameters": {"solver": "adam", "steps": adam_steps}}}
TARGETS = {"iso_c": "≤ tsv_exact", "wudi_exact": "≤ 3.0× task_arithmetic", "ace": "≤ 3.0× task_arithmetic"}


def adam_per_tensor(paths: List[Path], steps: int) -> Dict[str, Dict[str, float]]:
    """Seconds of one default ``wudi`` Adam solve per selected matrix shape, and the shape counts."""
    from safetensors import safe_open

    from mergekit_awd.core.selection import is_disentangled
    from mergekit_awd.core.task_vectors import task_vector_stack
    from mergekit_awd.core.wudi import WudiParameters, wudi_merge_matrices

    handles = [safe_open(str(p / "model.safetensors"), framework="pt") for p in paths]
    names = [n for n in handles[0].keys() if is_disentangled(n, len(handles[0].get_slice(n).get_shape()), "block_linear")]
    shapes = Counter(tuple(handles[0].get_slice(n).get_shape()) for n in names)
    timed: Dict[str, Dict[str, float]] = {}
    for shape, count in shapes.items():
        name = next(n for n in names if tuple(handles[0].get_slice(n).get_shape()) == shape)
        tensors = [h.get_tensor(name) for h in handles]
        stack = task_vector_stack(tensors[0], tensors[1:])
        start = time.perf_counter()
        wudi_merge_matrices(stack, None, WudiParameters(solver="adam", steps=steps))
        seconds = time.perf_counter() - start
        timed["x".join(map(str, shape))] = {"tensor": name, "seconds": seconds, "count": count}
        print(f"wudi adam {name} {shape}: {seconds:.1f} s ({steps} steps), {count} such tensors", flush=True)
    return timed


def adam_estimate(paths: List[Path], steps: int, reference: float) -> Tuple[Dict[str, Any], List[str]]:
    """wudi with Adam, not run whole: per matrix shape one solve timed, times the number of such
    matrices, plus task_arithmetic's time; (results entry, table lines)."""
    adam = adam_per_tensor(paths, steps)
    adam_total = reference + sum(entry["seconds"] * entry["count"] for entry in adam.values())
    estimate = {"per_tensor": adam, "estimated_model_seconds": adam_total, "estimated_ratio": adam_total / reference,
                "steps": steps}
    return estimate, [
        f"| wudi_adam (estimate) | {adam_total:.0f} | {adam_total / reference:.1f} | reported as measured |",
        "",
        f"wudi_adam is estimated, not run whole: one default Adam solve ({steps} steps) measured per "
        "matrix shape, times the number of such matrices, plus task_arithmetic's time:",
        "",
        "| shape | tensor timed | seconds | tensors |",
        "| --- | --- | ---: | ---: |",
        *[f"| {shape} | {entry['tensor']} | {entry['seconds']:.1f} | {entry['count']} |"
          for shape, entry in adam.items()],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of every merge process")
    parser.add_argument("--adam-steps", type=int, default=300, help="wudi Adam steps per tensor (the reference's)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"],
                        help="cuda: every merge with --cuda, wudi adam run whole (results: peer_speed_cuda)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="only these rows (task_arithmetic, the reference, always runs); on CPU also the CUDA "
                             "rows awd_tensor, awd_row and wudi_adam, run whole (results: --output)")
    parser.add_argument("--output", default=None,
                        help="results file stem in benchmarks/results (default peer_speed, or peer_speed_cuda)")
    args = parser.parse_args()
    import torch

    cuda = args.device == "cuda"
    torch.set_num_threads(args.threads)
    methods = cuda_methods(args.adam_steps) if cuda else METHODS
    if args.methods:
        available = cuda_methods(args.adam_steps)
        unknown = sorted(set(args.methods) - set(available))
        if unknown:
            parser.error(f"unknown method(s) {unknown}; choose from {sorted(available)}")
        methods = {name: spec for name, spec in available.items() if name == "task_arithmetic" or name in args.methods}
    output = args.output or ("peer_speed_cuda" if cuda else "peer_speed")
    load_at_start = os.getloadavg()[0]
    paths = build_inputs(CACHE)
    work = CACHE / "peer_speed_runs"
    work.mkdir(parents=True, exist_ok=True)
    runs: Dict[str, List[float]] = {name: [] for name in methods}
    for round_index in range(args.rounds):
        for name, method in methods.items():
            config = work / f"{name}.yml"
            write_merge_config(paths, method["merge_method"], method["parameters"], "bfloat16", config)
            result = measure_merge(config, work / f"out_{name}", threads=args.threads, jobs=args.threads, cuda=cuda)
            runs[name].append(result["seconds"])
            print(f"round {round_index + 1} {name:16s} {result['seconds']:7.2f} s", flush=True)
    best = {name: min(seconds) for name, seconds in runs.items()}
    reference = best["task_arithmetic"]
    ratios = {name: seconds / reference for name, seconds in best.items()}
    where = (f"{torch.cuda.get_device_name(0)} (`--cuda`), torch {torch.__version__}, {os.cpu_count()} CPU cores"
             if cuda else f"{os.cpu_count()} CPU cores, torch {torch.__version__}")
    results = {
        "machine": machine_info(threads_per_merge=args.threads, load_average_at_start=load_at_start,
                                device=args.device, **({"gpu": torch.cuda.get_device_name(0)} if cuda else {})),
        "model": "LLaMA-shaped, hidden 768, 12 layers, MLP 2048, vocab 32000, bfloat16, 3 fine-tunes",
        "runs": runs, "best_seconds": best, "ratios_to_task_arithmetic": ratios, "targets": TARGETS,
    }
    lines = [
        "# Data-free peers: merge time vs task_arithmetic" + (" (CUDA)" if cuda else ""),
        "",
        f"Command: `python -m benchmarks.speed.bench_peer_speed --rounds {args.rounds} --threads {args.threads} "
        f"--adam-steps {args.adam_steps}{' --device cuda' if cuda else ''}"
        f"{' --methods ' + ' '.join(args.methods) if args.methods else ''}"
        f"{' --output ' + args.output if args.output else ''}` ({where}, {args.threads} thread(s) per "
        f"merge process, load average at start {load_at_start:.1f}). Model: {results['model']}; "
        f"best of {args.rounds} round(s), each merge a fresh `mergekit-awd` process (select: block_linear, "
        "the package default; the wall time includes starting Python, loading and writing).",
        "",
        "| method | wall s | ratio to task_arithmetic | target |",
        "| --- | ---: | ---: | --- |",
        *[f"| {name} | {best[name]:.2f} | {ratios[name]:.2f} | {TARGETS.get(name, '')} |" for name in methods],
    ]
    if not cuda and "wudi_adam" not in methods:
        results["wudi_adam"], adam_lines = adam_estimate(paths, args.adam_steps, reference)
        lines += adam_lines
    lines.append("")
    save_results(output, results, lines)


if __name__ == "__main__":
    main()
