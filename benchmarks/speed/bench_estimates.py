"""``python -m benchmarks.speed.bench_estimates``: the constants of the up-front time estimate
(``mergekit_awd.pipeline.estimate``) and how well the estimate predicts real merges.

1. Constants: seconds per unit of float32 work on this machine, median over LLM-like shapes
   (``svd``: one ``torch.linalg.svd(full_matrices=False)`` of an m×n matrix per m·n·min(m, n);
   ``matmul``: one multiply-add of ``A @ B``).  These are the values ``SECONDS_PER_UNIT`` holds
   (copied there by hand from this script's output; the script says when they disagree by > 2×).
2. Check: the merges the estimate is printed for (``tsv`` exact and lowrank, ``iso_c``, ``iso_cts``,
   ``wudi`` exact) run through ``run_merge`` on the LLM track's SmolLM2 family when it is cached
   (``./run.sh llm-quality``), else on a synthetic 12-layer LLaMA family; the estimate of the matrix
   work against the measured merge wall time (loading and writing included, so the ratio is < 1
   where I/O dominates).

Writes ``benchmarks/results/estimates.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from benchmarks.common import RESULTS

SVD_SHAPES: Tuple[Tuple[int, int], ...] = ((576, 1536), (1536, 576), (576, 576), (1024, 1024), (768, 2048),
                                           (2048, 768))
MATMUL_SHAPES: Tuple[Tuple[int, int, int], ...] = ((1024, 1024, 1024), (576, 1536, 576), (2048, 768, 2048),
                                                   (4, 576, 1536))
CHECK_METHODS: Tuple[Tuple[str, Dict[str, Any]], ...] = (
    ("tsv", {}), ("tsv", {"svd": "lowrank"}), ("iso_c", {}), ("iso_cts", {}), ("wudi", {"solver": "exact"}),
)


def _median_seconds(function, repeats: int = 3) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_constants() -> Dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    svd = []
    for m, n in SVD_SHAPES:
        a = torch.randn(m, n, generator=generator)
        seconds = _median_seconds(lambda: torch.linalg.svd(a, full_matrices=False))
        svd.append({"shape": [m, n], "seconds": seconds, "per_unit": seconds / (m * n * min(m, n))})
    matmul = []
    for m, k, n in MATMUL_SHAPES:
        a, b = torch.randn(m, k, generator=generator), torch.randn(k, n, generator=generator)
        seconds = _median_seconds(lambda: a @ b, repeats=5)
        matmul.append({"shape": [m, k, n], "seconds": seconds, "per_unit": seconds / (m * k * n)})
    return {
        "svd": statistics.median(e["per_unit"] for e in svd),
        "matmul": statistics.median(e["per_unit"] for e in matmul),
        "svd_shapes": svd, "matmul_shapes": matmul, "threads": torch.get_num_threads(),
    }


def family() -> Tuple[str, List[Path]]:
    """(label, [base, fine-tunes...]): the SmolLM2 family if cached, else a synthetic one."""
    from benchmarks.llm.paths import BASE_DIR, FINETUNE_DIR
    from benchmarks.llm.tasks import TASK_NAMES

    folders = [FINETUNE_DIR / t for t in TASK_NAMES]
    if (BASE_DIR / "model.safetensors").exists() and all((f / "model.safetensors").exists() for f in folders):
        return "SmolLM2-135M-Instruct, 4 fine-tunes (LLM track)", [BASE_DIR, *folders]
    from mergekit_awd.testing.synthetic import BENCH_150M, build_family

    root = Path(tempfile.mkdtemp(prefix="estimates-family-"))
    return "synthetic 12-layer LLaMA (hidden 768), 4 fine-tunes", build_family(root, n_models=4, shape=BENCH_150M)


def check_estimates(paths: Sequence[Path], methods=CHECK_METHODS) -> List[Dict[str, Any]]:
    from mergekit_awd.mergekit_adapter.registration import method_for
    from mergekit_awd.pipeline.config import load_config
    from mergekit_awd.pipeline.estimate import estimate_merge
    from mergekit_awd.pipeline.runner import run_merge
    from mergekit_awd.testing.synthetic import merge_config

    rows = []
    for name, parameters in methods:
        config = merge_config(name, paths, dict(parameters), "float32")
        merge_configuration, _, _ = load_config(config)
        estimate = estimate_merge(merge_configuration, method_for(name), on_cpu=True)
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            run_merge(config, str(Path(out) / "merged"), quiet=True, copy_tokenizer=False)
            seconds = time.perf_counter() - start
        rows.append({"method": name, "parameters": parameters, "estimated_seconds": estimate.seconds,
                     "matrices": estimate.matrices, "measured_seconds": seconds,
                     "estimate_over_measured": estimate.seconds / seconds})
        print(f"{name} {parameters}: estimated {estimate.seconds:.1f} s of matrix work, merge took "
              f"{seconds:.1f} s", flush=True)
    return rows


def write_results(constants: Dict[str, Any], label: str, rows: List[Dict[str, Any]], in_package: Dict[str, float]
                  ) -> None:
    result = {"constants": constants, "in_package": in_package, "family": label, "checks": rows}
    (RESULTS / "estimates.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Up-front time estimates: constants and check",
        "",
        "Reproduce: `python -m benchmarks.speed.bench_estimates` (one run; float32, "
        f"{constants['threads']} threads).",
        "",
        "| unit | measured here (s) | in `pipeline/estimate.py` (s) |",
        "| --- | --- | --- |",
        f"| svd (per m·n·min(m,n)) | {constants['svd']:.3e} | {in_package['svd']:.3e} |",
        f"| matmul (per multiply-add) | {constants['matmul']:.3e} | {in_package['matmul']:.3e} |",
        "",
        f"Check on {label} (merge wall time includes loading and writing):",
        "",
        "| method | parameters | matrices | estimated matrix work (s) | measured merge (s) | estimate / measured |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append(f"| {row['method']} | {row['parameters'] or 'defaults'} | {row['matrices']} | "
                     f"{row['estimated_seconds']:.1f} | {row['measured_seconds']:.1f} | "
                     f"{row['estimate_over_measured']:.2f} |")
    (RESULTS / "estimates.md").write_text("\n".join(lines) + "\n")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--constants-only", action="store_true", help="measure the constants, skip the merges")
    args = parser.parse_args(argv)
    from mergekit_awd.pipeline.estimate import SECONDS_PER_UNIT

    constants = measure_constants()
    print(f"svd {constants['svd']:.3e} s/unit, matmul {constants['matmul']:.3e} s/unit "
          f"({constants['threads']} threads)", flush=True)
    for kind in ("svd", "matmul"):
        held = SECONDS_PER_UNIT[kind]
        if not held or not 0.5 <= constants[kind] / held <= 2.0:
            print(f"note: SECONDS_PER_UNIT[{kind!r}] = {held:.3e} differs from this machine's {constants[kind]:.3e}")
    if args.constants_only:
        return
    label, paths = family()
    rows = check_estimates(paths)
    write_results(constants, label, rows, dict(SECONDS_PER_UNIT))


if __name__ == "__main__":
    main()
