"""``python -m benchmarks.speed.bench_llm_scale [--device cuda]``: per-tensor cost at Llama-3-8B shapes.

For each shape of a Llama-3-8B layer (q/o 4096×4096, k/v 1024×4096, gate/up 14336×4096,
down 4096×14336) and K ∈ {2, 4, 8} bfloat16 fine-tunes, the wall time and the peak memory of one
tensor merged by each method's own ``merge_group`` (the code mergekit runs for that tensor:
mergekit's ``task_arithmetic``; ``awd`` scope tensor; ``awd`` scope model's per-tensor work, i.e.
the Gram pass plus the write with a solved β; ``awd`` scope row; ``tsv`` exact and lowrank), as ratios to
task_arithmetic measured in the same run.  Random Gaussian task vectors (scale 1e-3 of a unit-RMS
base): SVD and solve times do not depend on the values much.

Extrapolation to a whole 8B merge: 32 layers × (q, k, v, o, gate, up, down) of the measured
per-tensor times (embeddings, norms and I/O not included: the table says so).

On CUDA every row runs in one process (each method first warmed up on a 1/16-size tensor, so that
library handles and kernels are not timed) and the results are written after each row, so that a run
stopped by ``--budget`` or a timeout keeps what it measured.

Peak memory: CPU, the process's peak RSS (VmHWM, reset before the call) above its RSS before the
call, in a fresh child process per measurement; CUDA, ``torch.cuda.max_memory_allocated`` above the inputs.
Writes ``benchmarks/results/llm_scale[_cuda].{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

SHAPES: Dict[str, Tuple[int, int]] = {
    "q_proj / o_proj": (4096, 4096),
    "k_proj / v_proj": (1024, 4096),
    "gate_proj / up_proj": (14336, 4096),
    "down_proj": (4096, 14336),
}
# tensors of each shape in one Llama-3-8B layer
PER_LAYER: Dict[str, int] = {"q_proj / o_proj": 2, "k_proj / v_proj": 2, "gate_proj / up_proj": 2, "down_proj": 1}
LAYERS = 32
KS = (2, 4, 8)
METHODS: Dict[str, Tuple[str, Dict[str, Any]]] = {
    "task_arithmetic": ("task_arithmetic", {}),
    "awd tensor": ("awd", {"scope": "tensor"}),
    "awd model (per tensor)": ("awd", {"scope": "model"}),
    "awd row": ("awd", {"scope": "row"}),
    "tsv exact": ("tsv", {}),
    "tsv lowrank": ("tsv", {"svd": "lowrank"}),
    "iso_c": ("iso_c", {}),
    "iso_cts": ("iso_cts", {}),
    "wudi exact": ("wudi", {"solver": "exact"}),
    "wudi adam": ("wudi", {"solver": "adam"}),
    "ace": ("ace", {}),
}
# The default rows per device: the peers' SVDs and Adam solves take hours at these shapes on a 2-core CPU.
DEFAULT_METHODS: Dict[str, Tuple[str, ...]] = {
    "cpu": ("task_arithmetic", "awd tensor", "awd model (per tensor)", "awd row", "tsv exact", "tsv lowrank"),
    "cuda": tuple(METHODS),
}
# Rows measured only at the K of --exact-ks (when given): full SVDs or hundreds of Adam steps per tensor.
SLOW = ("tsv exact", "iso_c", "iso_cts", "wudi adam", "ace")
NAME = "model.layers.0.mlp.gate_proj.weight"  # a block-linear name: selected by every method


def parameters_for(method: Any, overrides: Dict[str, Any], ids: Sequence[int]) -> Dict[str, Any]:
    """Spec defaults with per-model parameters as {id: value} (weight 1.0), then ``overrides``."""
    values: Dict[str, Any] = {}
    for spec in method.spec.parameters:
        default = spec.default
        values[spec.name] = {i: default for i in ids} if spec in method.spec.input_parameters else default
    values["weight"] = {i: 1.0 for i in ids}
    values.update(overrides)
    return values


def make_group(rows: int, cols: int, k: int, device: str):
    import torch
    from mergekit.merge_methods.base import TensorEntry, TensorGroup, TensorMetadata

    generator = torch.Generator(device="cpu").manual_seed(0)
    base = torch.randn(rows, cols, generator=generator).to(torch.bfloat16)
    entries = [TensorEntry(id=0, tensor=base.to(device), is_base=True)]
    for i in range(k):
        delta = 1e-3 * torch.randn(rows, cols, generator=generator)
        entries.append(TensorEntry(id=i + 1, tensor=(base.float() + delta).to(torch.bfloat16).to(device)))
    return TensorGroup(entries, TensorMetadata(name=NAME))


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5), so the peak is the call's own."""
    with open("/proc/self/clear_refs", "w", encoding="ascii") as handle:
        handle.write("5")


def measure_one(label: str, shape: str, k: int, device: str, shrink: int = 1) -> Dict[str, Any]:
    """Run in a fresh process: build the inputs, merge once (timed), report time and peak memory."""
    import torch
    import mergekit.merge_methods as registry

    import mergekit_awd  # noqa: F401  (registers our methods)
    from mergekit_awd.mergekit_adapter.context import CONTEXT_PARAMETER, MergeContext
    from mergekit_awd.mergekit_adapter.model_scope.solution import ScopeSolution

    method_name, overrides = METHODS[label]
    method = registry.get(method_name)
    rows, cols = (d // shrink for d in SHAPES[shape])
    group = make_group(rows, cols, k, device)
    parameters = parameters_for(method, overrides, list(range(1, k + 1)))
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        import gc

        gc.collect()
        _reset_peak_rss()
        before = _status_kib("VmRSS") * 1024
    start = time.perf_counter()
    if overrides.get("scope") == "model":
        # the per-tensor work of a model scope: its Gram pass, then the write with a solved β
        from mergekit_awd.core.task_vectors import gram_of_task_vectors

        base = group.base.tensor
        gram_of_task_vectors(base, [e.tensor for e in group.non_base])
        solution = ScopeSolution(key="model", ids=tuple(e.id for e in group.non_base),
                                 coefficients=torch.full((k,), 1.0 / k, dtype=torch.float64),
                                 included=torch.ones(k, dtype=torch.bool))
        merged = method.merge_group(group, **parameters, **{CONTEXT_PARAMETER: MergeContext(scope_solution=solution)})
    else:
        merged = method.merge_group(group, **parameters)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _status_kib("VmHWM") * 1024) - before
    assert merged.shape == (rows, cols)
    return {"method": label, "shape": shape, "k": k, "seconds": seconds, "peak_extra_bytes": max(peak, 0)}


def run_child(label: str, shape: str, k: int, device: str, shrink: int = 1) -> Dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "benchmarks.speed.bench_llm_scale", "--child", label, shape, str(k),
                           "--device", device, "--shrink", str(shrink)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{label} {shape} K={k} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def extrapolate(rows: List[Dict[str, Any]], k: int) -> Dict[str, float]:
    """Seconds of matrix work of a whole 32-layer 8B merge per method at K (methods measured at
    every shape only)."""
    totals: Dict[str, float] = {}
    shapes: Dict[str, int] = {}
    for row in rows:
        if row["k"] == k:
            totals[row["method"]] = totals.get(row["method"], 0.0) + row["seconds"] * PER_LAYER[row["shape"]] * LAYERS
            shapes[row["method"]] = shapes.get(row["method"], 0) + 1
    return {method: seconds for method, seconds in totals.items() if shapes[method] == len(SHAPES)}


def write(rows: List[Dict[str, Any]], device: str, threads: int, command: str = "",
          methods: Sequence[str] = tuple(METHODS), skipped: Sequence[str] = (), output: Optional[str] = None) -> None:
    from benchmarks.common import RESULTS

    import torch

    stem = output or ("llm_scale_cuda" if device == "cuda" else "llm_scale")
    where = (f"cuda, {torch.cuda.get_device_name(0)}, torch {torch.__version__}" if device == "cuda"
             else f"cpu, {threads} threads, torch {torch.__version__}")
    ta = {(r["shape"], r["k"]): r["seconds"] for r in rows if r["method"] == "task_arithmetic"}
    for row in rows:
        row["time_vs_task_arithmetic"] = row["seconds"] / ta[(row["shape"], row["k"])]
    whole = {str(k): extrapolate(rows, k) for k in KS}
    (RESULTS / f"{stem}.json").write_text(json.dumps(
        {"device": device, "device_name": where, "threads": threads, "rows": rows, "whole_8b_seconds": whole,
         "not_measured": list(skipped)}, indent=2) + "\n")
    lines = [f"# Per-tensor cost at Llama-3-8B shapes ({where}, bfloat16 inputs)", "",
             "Reproduce: `" + (command or "python -m benchmarks.speed.bench_llm_scale"
                               + (" --device cuda" if device == "cuda" else "")) + "`",
             "", "| method | shape | K | seconds | × task_arithmetic | peak extra memory (MiB) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['method']} | {row['shape']} {SHAPES[row['shape']][0]}×{SHAPES[row['shape']][1]} | "
                     f"{row['k']} | {row['seconds']:.2f} | {row['time_vs_task_arithmetic']:.1f} | "
                     f"{row['peak_extra_bytes'] / 2**20:.0f} |")
    lines += ["", "Whole 8B merge, matrix work only (32 layers × 7 projections; loading, writing, embeddings "
              "and norms not included):", "", "| method | " + " | ".join(f"K = {k}" for k in KS) + " |",
              "| --- | " + " | ".join("---" for _ in KS) + " |"]
    for label in methods:
        cells = []
        for k in KS:
            seconds = whole[str(k)].get(label)
            cells.append("not measured" if seconds is None else (f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if skipped:
        lines += ["", "Not measured (failed, or the run's `--budget` was spent): " + ", ".join(skipped) + "."]
    (RESULTS / f"{stem}.md").write_text("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--ks", type=int, nargs="*", default=list(KS))
    parser.add_argument("--methods", nargs="*", default=None, choices=list(METHODS),
                        help="rows to measure (default: on cpu the package's and task_arithmetic, on cuda all)")
    parser.add_argument("--exact-ks", type=int, nargs="*", default=None,
                        help="K values at which the slow rows (tsv exact, iso_c, iso_cts, wudi adam) are measured "
                             "(default: all of --ks); on a 2-core CPU an SVD of a 14336×4096 matrix takes minutes")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds: rows that would start later are skipped and reported as not measured")
    parser.add_argument("--shrink", type=int, default=1,
                        help="divide every shape by this (a quick check of the script; results not written)")
    parser.add_argument("--output", default=None,
                        help="results file stem in benchmarks/results (default llm_scale, or llm_scale_cuda)")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "SHAPE", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        label, shape, k = args.child
        print(json.dumps(measure_one(label, shape, int(k), args.device, args.shrink)))
        return
    import torch

    methods = args.methods if args.methods is not None else list(DEFAULT_METHODS[args.device])
    plan = [(label, shape, k) for k in args.ks for shape in SHAPES
            for label in (["task_arithmetic"] + [m for m in methods if m != "task_arithmetic"])
            if not (label in SLOW and args.exact_ks is not None and k not in args.exact_ks)]
    if args.device == "cuda" and args.shrink == 1:
        for label in dict.fromkeys(label for label, _, _ in plan):  # warm-up, not recorded
            try:
                measure_one(label, next(iter(SHAPES)), 2, "cuda", shrink=16)
            except Exception as error:  # its rows fail again below and are reported there
                print(f"warm-up of {label} failed: {type(error).__name__}: {error}", flush=True)
    command = "python -m benchmarks.speed.bench_llm_scale " + " ".join(argv if argv is not None else sys.argv[1:])
    threads = torch.get_num_threads() if args.device == "cpu" else 0
    started = time.perf_counter()
    rows, skipped = [], []
    for label, shape, k in plan:
        if args.budget is not None and time.perf_counter() - started > args.budget and label != "task_arithmetic":
            skipped.append(f"{label} {shape} K={k}")
            continue
        try:
            row = (measure_one(label, shape, k, "cuda", args.shrink) if args.device == "cuda"
                   else run_child(label, shape, k, args.device, args.shrink))
        except Exception as error:  # one row's failure (say, out of memory) is reported, the others run
            if label == "task_arithmetic":
                raise
            print(f"{label} {shape} K={k} failed: {error}", flush=True)
            skipped.append(f"{label} {shape} K={k} (failed: {type(error).__name__})")
            continue
        rows.append(row)
        print(f"{label:<24} {shape:<20} K={k}: {row['seconds']:.2f} s, "
              f"+{row['peak_extra_bytes'] / 2**20:.0f} MiB", flush=True)
        if args.shrink == 1:
            write(rows, args.device, threads, command.strip(), methods, skipped, args.output)
    if skipped:
        print(f"not measured (failed, or past the {args.budget} s budget): {', '.join(skipped)}")

if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
