"""One line before an expensive merge starts on CPU: about how long its matrix work will take.

estimate = Σ over the selected 2-D tensors of the method's ``matrix_work`` (each method's cost model, a
``*_work`` function in its core module, counts leading terms in two units: ``svd`` = rows·cols·min(rows,
cols) per float32 ``torch.linalg.svd(full_matrices=False)`` of a rows × cols matrix, ``matmul`` = one
multiply-add) × ``SECONDS_PER_UNIT`` × (REFERENCE_THREADS / torch threads).  The constants were
measured on a 2-core machine (float32, torch 2.13 CPU) by ``python -m benchmarks.speed.bench_estimates``,
which also compares estimates with measured merges (``benchmarks/results/estimates.md``).  Loading and writing are not counted; the shapes come from
the base model's safetensors headers (local folders only; nothing is read for a Hub id).
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from mergekit_awd.results import JsonResult

# Seconds per unit on the reference machine (benchmarks/results/estimates.json, "constants").
SECONDS_PER_UNIT: Dict[str, float] = {"svd": 1.990e-10, "matmul": 1.193e-11}
REFERENCE_THREADS = 2
PRINT_ABOVE_SECONDS = 20.0


@dataclass(frozen=True)
class MergeEstimate(JsonResult):
    """Estimated seconds of a method's matrix work on this CPU, and what it was computed from."""

    method: str
    seconds: float
    matrices: int
    models: int
    faster_options: Tuple[str, ...]

    def line(self) -> str:
        faster = " or ".join(f"`{o}`" for o in self.faster_options)
        return (f"about {format_duration(self.seconds)} of matrix work on CPU ({self.matrices} matrices, "
                f"{self.models} models; estimate from the tensor shapes)" + (f"; faster: {faster}" if faster else ""))


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def tensor_shapes(model_dir: str) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Name → shape from the safetensors headers of a local model folder (None if there are none)."""
    files = sorted(glob.glob(os.path.join(model_dir, "*.safetensors")))
    if not files:
        return None
    shapes: Dict[str, Tuple[int, ...]] = {}
    for path in files:
        with open(path, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            if size <= 0 or size > 100_000_000:
                return None
            header = json.loads(handle.read(size))
        shapes.update({name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__"})
    return shapes


def seconds_for(work: Dict[str, float], threads: int) -> float:
    scale = REFERENCE_THREADS / max(1, threads)
    return sum(units * SECONDS_PER_UNIT.get(kind, 0.0) for kind, units in work.items()) * scale


def estimate_matrix_work(method: Any, settings: Any, shapes: Dict[str, Tuple[int, ...]], models: int,
                         threads: int) -> MergeEstimate:
    """The estimate for ``method`` (a MatrixMergeMethod) at ``settings`` on tensors ``shapes``."""
    from mergekit_awd.core.selection import is_task_matrix

    matrices: List[Tuple[int, int]] = [shape for name, shape in shapes.items()
                                       if len(shape) == 2 and is_task_matrix(name, 2, settings.select)]
    total: Dict[str, float] = {}
    for rows, cols in matrices:
        for kind, units in method.matrix_work(rows, cols, models, settings).items():
            total[kind] = total.get(kind, 0.0) + units
    return MergeEstimate(method.name, seconds_for(total, threads), len(matrices), models,
                         tuple(getattr(method, "faster_options", ())))


def estimate_merge(config: Any, method: Any, on_cpu: bool) -> Optional[MergeEstimate]:
    """The estimate for a merge configuration, or None (not our matrix method, not on CPU, a Hub base,
    settings that only the merge itself can resolve)."""
    import torch

    if not on_cpu or method is None or not hasattr(method, "matrix_work") or config.base_model is None:
        return None
    base_dir = config.base_model.model.path
    if not os.path.isdir(base_dir):
        return None
    shapes = tensor_shapes(base_dir)
    parameters = {k: v for k, v in (config.parameters or {}).items() if isinstance(v, (bool, int, float, str))}
    try:
        settings = method.settings(parameters)
    except Exception:  # validation reports bad settings with its own message
        return None
    models = len([m for m in config.referenced_models() if m != config.base_model])
    if not shapes or models < 1 or not method.matrix_work(64, 64, models, settings):
        return None  # nothing to estimate (e.g. awd combining by task arithmetic)
    return estimate_matrix_work(method, settings, shapes, models, torch.get_num_threads())
