"""Speed and accuracy of `tsv` (TSV-M) exact vs lowrank against mergekit's `task_arithmetic`, one run.

    python -m benchmarks.speed.bench_tsv_speed [--cache ~/.cache/mergekit-awd/benchmarks] [--cuda] [--families gaussian,decaying]

Builds (once, cached outside git) a ~134M-parameter LLaMA-shaped base and 3 fine-tunes in float32
with ``build_family(..., shape=BENCH_150M)`` (i.i.d. Gaussian task vectors: a flat singular
spectrum, the worst case for a randomized SVD), and a second family on the same base whose block
task matrices have a decaying spectrum σ_j ∝ exp(−j / decay) with random singular vectors (closer to
real fine-tunes, whose task matrices are low-rank; paper §"low-rank"), same Frobenius norms.
For each family it runs task_arithmetic, tsv (svd: exact) and tsv (svd: lowrank, the module's
defaults) as fresh `mergekit-awd` processes (wall time and peak RSS), then loads the outputs and
reports the time ratios to task_arithmetic and the relative error of the merged weights
‖fast − exact‖_F / ‖exact − base‖_F over all tensors (and over the TSV-M tensors alone).
Writes benchmarks/results/tsv_speed.{json,md}.  Float32 so that the error is the algorithm's, not
bfloat16 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Dict, List

import torch

from benchmarks.common import CACHE, save_results
from benchmarks.speed.measure import cached_family, machine_info, measure_merge, write_merge_config

LAYER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
TARGET_TIME_RATIO = 3.0
TARGET_ERROR = 1e-2


def is_block_linear(name: str, tensor: torch.Tensor) -> bool:
    return ".layers." in name and tensor.ndim == 2 and any(p in name for p in LAYER_LINEAR)


def gaussian_family(cache: Path) -> List[Path]:
    from mergekit_awd.testing.synthetic import BENCH_150M

    return cached_family(cache / "tsv_speed_family", "the ~134M LLaMA family (float32)", shape=BENCH_150M)


def decaying_family(cache: Path, gaussian: List[Path], decay: float) -> List[Path]:
    """Same base; block task matrices U diag(σ) Vᵀ, σ_j ∝ exp(−j/decay), ‖τ‖_F as in the Gaussian
    family; every other tensor keeps the Gaussian family's task vector."""
    from safetensors.torch import load_file, save_file

    family = cache / f"tsv_speed_family_decay{decay:g}"
    paths = [gaussian[0]] + [family / f"ft_{i}" for i in range(3)]
    if (family / "complete").exists():
        return paths
    print(f"building the decaying-spectrum fine-tunes in {family} (once) ...", flush=True)
    shutil.rmtree(family, ignore_errors=True)
    base = load_file(str(gaussian[0] / "model.safetensors"))
    generator = torch.Generator().manual_seed(1234)
    for i, target in enumerate(paths[1:]):
        source = load_file(str(gaussian[i + 1] / "model.safetensors"))
        state = {}
        for name, value in base.items():
            tau = source[name] - value
            if is_block_linear(name, value):
                rows, cols = value.shape
                rank = min(rows, cols)
                u = torch.linalg.qr(torch.randn(rows, rank, generator=generator)).Q
                v = torch.linalg.qr(torch.randn(cols, rank, generator=generator)).Q
                sigma = torch.exp(-torch.arange(rank, dtype=torch.float32) / decay)
                sigma *= tau.norm() / sigma.norm()
                tau = (u * sigma) @ v.T
            state[name] = (value + tau).contiguous()
        target.mkdir(parents=True, exist_ok=True)
        save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
        shutil.copy(gaussian[i + 1] / "config.json", target / "config.json")
    (family / "complete").write_text("ok\n")
    return paths


def merged_errors(base_dir: Path, exact_dir: Path, fast_dir: Path) -> Dict[str, float]:
    from safetensors import safe_open

    def tensors(folder: Path):
        return {p: safe_open(str(p), framework="pt") for p in sorted(folder.glob("*.safetensors"))}

    def lookup(handles, name):
        for handle in handles.values():
            if name in handle.keys():
                return handle.get_tensor(name).double()
        raise KeyError(name)

    base, exact, fast = tensors(base_dir), tensors(exact_dir), tensors(fast_dir)
    sums = {"all_num": 0.0, "all_den": 0.0, "tsv_num": 0.0, "tsv_den": 0.0}
    worst = 0.0
    for handle in exact.values():
        for name in handle.keys():
            e, f, b = handle.get_tensor(name).double(), lookup(fast, name), lookup(base, name)
            num, den = float((f - e).pow(2).sum()), float((e - b).pow(2).sum())
            sums["all_num"] += num
            sums["all_den"] += den
            if is_block_linear(name, e):
                sums["tsv_num"] += num
                sums["tsv_den"] += den
                worst = max(worst, (num / den) ** 0.5 if den else 0.0)
    return {"relative_error_all": (sums["all_num"] / sums["all_den"]) ** 0.5,
            "relative_error_tsv_tensors": (sums["tsv_num"] / sums["tsv_den"]) ** 0.5,
            "worst_tensor_relative_error": worst}


def measure_family(label: str, paths: List[Path], work: Path, cuda: bool, fast_parameters: Dict,
                   threads: int) -> Dict:
    work.mkdir(parents=True, exist_ok=True)
    methods = {"task_arithmetic": ("task_arithmetic", {"lambda": 1.0}),
               "tsv_lowrank": ("tsv", {"svd": "lowrank", **fast_parameters}),
               "tsv_exact": ("tsv", {"svd": "exact"})}
    runs: Dict[str, Dict[str, float]] = {}
    for name, (method, parameters) in methods.items():
        config = work / f"{label}_{name}.yml"
        write_merge_config(paths, method, parameters, "float32", config)
        runs[name] = measure_merge(config, work / f"{label}_{name}", threads=threads, cuda=cuda)
        print(f"{label:9s} {name:16s} {runs[name]['seconds']:8.2f} s  peak RSS {runs[name]['peak_rss_mib']:8.1f} MiB",
              flush=True)
    reference = runs["task_arithmetic"]["seconds"]
    errors = merged_errors(paths[0], work / f"{label}_tsv_exact", work / f"{label}_tsv_lowrank")
    report = json.loads((work / f"{label}_tsv_exact" / "tsv_report.json").read_text())
    sti = sum(e["sti"] for e in report["interference"].values())
    energy = [x for e in report["interference"].values() for x in e["energy_kept"]]
    return {"runs": runs,
            "time_ratio_exact": runs["tsv_exact"]["seconds"] / reference,
            "time_ratio_lowrank": runs["tsv_lowrank"]["seconds"] / reference,
            **errors,
            "sti_total": sti, "mean_energy_kept": sum(energy) / len(energy)}


def main() -> None:
    from mergekit_awd.core.tsv import TSVSettings

    defaults = TSVSettings()

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=str(CACHE))
    parser.add_argument("--cuda", action="store_true", help="run the merges with mergekit's --cuda")
    parser.add_argument("--families", default="gaussian,decaying")
    parser.add_argument("--decay", type=float, default=32.0, help="e-folding index of the decaying spectrum")
    parser.add_argument("--oversample", type=int, default=defaults.oversample)
    parser.add_argument("--power-iters", type=int, default=defaults.power_iters)
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP/MKL threads of every merge process (1: see the note in the results)")
    parser.add_argument("--output", default="tsv_speed",
                        help="results file name in benchmarks/results (without .json/.md)")
    args = parser.parse_args()
    cache = Path(args.cache)
    fast = {"oversample": args.oversample, "power_iters": args.power_iters}
    gaussian = gaussian_family(cache)
    families = {"gaussian": gaussian}
    if "decaying" in args.families.split(","):
        families["decaying"] = decaying_family(cache, gaussian, args.decay)
    families = {k: v for k, v in families.items() if k in args.families.split(",")}
    results = {name: measure_family(name, paths, cache / "tsv_speed_runs", args.cuda, fast, args.threads)
               for name, paths in families.items()}
    device = torch.cuda.get_device_name(0) if args.cuda and torch.cuda.is_available() else "cpu"
    summary = {
        "machine": machine_info(threads=args.threads, device=device, load_average=os.getloadavg()),
        "model": "LLaMA-shaped, hidden 768, 12 layers, MLP 2048, 4 KV heads, vocab 32000, float32, 3 fine-tunes",
        "families": {"gaussian": "build_family(shape=BENCH_150M): i.i.d. Gaussian task vectors (flat spectrum)",
                     "decaying": f"block task matrices U diag(σ) Vᵀ, σ_j ∝ exp(−j/{args.decay:g}), same norms"},
        "lowrank_parameters": fast,
        "targets": {"time_ratio_lowrank": TARGET_TIME_RATIO, "relative_error": TARGET_ERROR},
        "results": results,
    }
    lines = [
        "# tsv (TSV-M) speed and accuracy vs mergekit task_arithmetic",
        "",
        f"Command: `python -m benchmarks.speed.bench_tsv_speed{''.join(' ' + a for a in sys.argv[1:])}` "
        f"({os.cpu_count()} CPU cores, {args.threads} thread(s) per merge, device {device}, "
        f"torch {torch.__version__}). One run; each merge a fresh `mergekit-awd` process. Model: {summary['model']}. "
        f"lowrank: oversample {fast['oversample']}, power_iters {fast['power_iters']}.",
        "",
        "| family | TA s | exact s | lowrank s | exact / TA | lowrank / TA | ‖fast−exact‖/‖exact−base‖ (all) "
        "| (TSV tensors) | worst tensor | mean energy kept |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        runs = r["runs"]
        lines.append(
            f"| {name} | {runs['task_arithmetic']['seconds']:.1f} | {runs['tsv_exact']['seconds']:.1f} | "
            f"{runs['tsv_lowrank']['seconds']:.1f} | {r['time_ratio_exact']:.2f} | {r['time_ratio_lowrank']:.2f} | "
            f"{r['relative_error_all']:.2e} | {r['relative_error_tsv_tensors']:.2e} | "
            f"{r['worst_tensor_relative_error']:.2e} | {r['mean_energy_kept']:.3f} |")
    lines += ["", f"Targets: lowrank ≤ {TARGET_TIME_RATIO:g}× task_arithmetic, relative error ≤ {TARGET_ERROR:g}."]
    for name, r in results.items():
        met_time = r["time_ratio_lowrank"] <= TARGET_TIME_RATIO
        met_error = r["relative_error_all"] <= TARGET_ERROR
        lines.append(f"- {name}: time target {'met' if met_time else 'NOT met'}, "
                     f"error target {'met' if met_error else 'NOT met'}.")
    lines += ["", f"Threads: every merge process ran with OMP/MKL_NUM_THREADS={args.threads} (task_arithmetic too); "
              f"load average at start {summary['machine']['load_average'][0]:.1f}. On a shared 2-core machine, 2 "
              "OpenMP threads can make the SVD/QR kernels several times slower than 1 (threads spinning at barriers "
              "while the other core is taken): compare thread counts only on a quiet machine."]
    lines += ["", "Families: " + "; ".join(f"{k}: {v}" for k, v in summary["families"].items() if k in results) + ".",
              ""]
    save_results(args.output, summary, lines)


if __name__ == "__main__":
    main()
