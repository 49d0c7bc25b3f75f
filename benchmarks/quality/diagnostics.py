"""Task-vector statistics of the fine-tunes: norms ‖τ_i‖₂ (weight units) per tensor group."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Mapping

from benchmarks.harness.lambda_path import load_state
from mergekit_awd.core.selection import in_transformer_block

GROUPS = ("block_2d", "embeddings", "other")


def tensor_group(name: str, ndim: int) -> str:
    """block_2d: the tensors AWD disentangles by default; embeddings; other (biases, norms, pooler)."""
    if in_transformer_block(name) and ndim == 2:
        return "block_2d"
    if name.startswith("embeddings."):
        return "embeddings"
    return "other"


def task_vector_norms(base_dir: Path, encoder_dirs: Mapping[str, Path]) -> Dict[str, Dict[str, float]]:
    """task -> group -> ‖τ‖₂ over that group's tensors, plus "total"."""
    base = load_state(base_dir)
    out: Dict[str, Dict[str, float]] = {}
    for task, folder in encoder_dirs.items():
        tuned = load_state(folder)
        sums = {g: 0.0 for g in GROUPS}
        for name, tensor in base.items():
            if not tensor.is_floating_point():
                continue
            diff = tuned[name].double() - tensor.double()
            sums[tensor_group(name, tensor.ndim)] += float((diff * diff).sum())
        out[task] = {g: math.sqrt(v) for g, v in sums.items()}
        out[task]["total"] = math.sqrt(sum(sums.values()))
    return out
