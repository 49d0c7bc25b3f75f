"""How the speed scripts build their inputs and measure one merge.

    from benchmarks.speed.measure import run_measured
    seconds, peak_mib = run_measured("mergekit_awd.cli", [config, out, "--quiet"])

Peak memory is the child's own VmHWM (read from /proc/self/status at exit by
``benchmarks.speed._measured_child``).  ru_maxrss from wait4 is not used: Linux carries the parent's
high-water mark across fork and exec, so every child would report at least the parent's peak.

Only the standard library is imported here; torch, yaml and mergekit_awd inside the functions.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

# awd (both scopes) against mergekit's task_arithmetic, at the same λ: the speed and memory benchmarks.
METHODS = {
    "task_arithmetic": {"merge_method": "task_arithmetic", "parameters": {"lambda": 0.5}},
    "awd_tensor": {"merge_method": "awd", "parameters": {"lambda": 0.5, "scope": "tensor"}},
    "awd_model": {"merge_method": "awd", "parameters": {"lambda": 0.5, "scope": "model"}},
}

# The options of every measured `mergekit-awd CONFIG OUT` run.
MERGE_FLAGS = ("--no-copy-tokenizer", "--quiet", "--no-write-model-card")


def run_measured(module: str, args: Sequence[Any], env: Optional[Mapping[str, str]] = None) -> Tuple[float, float]:
    """Run ``python -m module *args`` in a fresh process; return (wall seconds, peak RSS in MiB)."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "peak.json"
        command = [sys.executable, "-m", "benchmarks.speed._measured_child", str(result), module, *map(str, args)]
        start = time.perf_counter()
        completed = subprocess.run(command, env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - start
        if completed.returncode != 0:
            raise RuntimeError(f"command failed ({completed.returncode}): {' '.join(command)}")
        return seconds, json.loads(result.read_text())["vm_hwm_kib"] / 1024


def measure_merge(config: Path, out: Path, threads: Optional[int] = None, jobs: Optional[int] = None,
                  cuda: bool = False) -> Dict[str, float]:
    """One ``mergekit-awd CONFIG OUT`` (``MERGE_FLAGS``, HF_HUB_OFFLINE=1) in a fresh process.

    ``out`` is removed first.  threads: OMP/MKL_NUM_THREADS of that process (unset: inherited);
    jobs: ``-j``; cuda: ``--cuda``.  Returns wall seconds and the process's peak RSS (MiB).
    """
    if out.exists():
        shutil.rmtree(out)
    args = [config, out, *MERGE_FLAGS]
    if jobs is not None:
        args += ["-j", str(jobs)]
    if cuda:
        args.append("--cuda")
    env = {"HF_HUB_OFFLINE": "1"}
    if threads is not None:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")})
    seconds, peak = run_measured("mergekit_awd.cli", args, env=env)
    return {"seconds": seconds, "peak_rss_mib": peak}


def write_merge_config(paths: Sequence[Path], method: str, parameters: dict, dtype: str, path: Path) -> None:
    """``path``: a mergekit YAML merging paths[1:] (weight 1 each) onto the base paths[0] with ``method``."""
    import yaml

    from mergekit_awd.testing.synthetic import merge_config

    config = merge_config(method, paths, parameters, dtype, weights=[1.0] * (len(paths) - 1))
    path.write_text(yaml.safe_dump(config))


def cached_family(family: Path, description: str, n_models: int = 3, **options: Any) -> List[Path]:
    """[base, ft_0, …] in ``family``: ``build_family`` (seed 0, no tokenizer, ``options``), built once.

    A build is complete when the last fine-tune's weights exist.
    """
    from mergekit_awd.testing.synthetic import build_family

    paths = [family / "base"] + [family / f"ft_{i}" for i in range(n_models)]
    if not (paths[-1] / "model.safetensors").exists():
        print(f"building {description} in {family} (once) ...", flush=True)
        shutil.rmtree(family, ignore_errors=True)
        build_family(family, n_models=n_models, seed=0, tokenizer=False, **options)
    return paths


def build_inputs(cache: Path) -> List[Path]:
    """The speed benchmarks' ~134M-parameter LLaMA-shaped base and 3 fine-tunes in bfloat16."""
    import torch

    from mergekit_awd.testing.synthetic import BENCH_150M

    return cached_family(cache / "llama134m_bf16", "the ~134M LLaMA family", shape=BENCH_150M, dtype=torch.bfloat16)


def machine_info(**extra: Any) -> Dict[str, Any]:
    """CPU count, torch and Python versions, then ``extra`` (threads, load average, …)."""
    import torch

    return {"cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(), **extra}


def decaying_matrix(rows: int, cols: int, decay: float, generator):
    """A rows×cols (rows ≥ cols) matrix U diag(σ) Vᵀ with σ_j = exp(−j/decay), random U and V."""
    import torch

    left, _ = torch.linalg.qr(torch.randn(rows, cols, generator=generator))
    right, _ = torch.linalg.qr(torch.randn(cols, cols, generator=generator))
    return (left * torch.exp(-torch.arange(cols) / decay)) @ right.T

