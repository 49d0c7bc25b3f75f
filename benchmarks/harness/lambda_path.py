"""The λ path of a merge: every method benchmarked here outputs θ(λ) = θ_base + λ · D, with D
independent of λ (task arithmetic, TIES, DARE, DELLA, AWD: δ is solved before λ scales the sum).

So one CLI merge at λ = 1 gives D = θ(1) − θ_base and every θ(λ) on the validation grid exactly.
The chosen λ is then merged again through the CLI, and ``max_abs_difference`` between that merge and
θ_base + λ·D is recorded (it must be float32 rounding only; a method that is not linear in λ
would show here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import torch
from safetensors.torch import load_file

State = Dict[str, torch.Tensor]


def load_state(folder: Path) -> State:
    """All tensors of the ``*.safetensors`` files in a model folder."""
    state: State = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(str(file)))
    if not state:
        raise FileNotFoundError(f"no safetensors in {folder}")
    return state


class LambdaPath:
    """θ(λ) = θ_base + λ · (θ(1) − θ_base), tensor by tensor (float32)."""

    def __init__(self, base: State, merged_at_one: State) -> None:
        missing = set(merged_at_one) - set(base)
        if missing:
            raise KeyError(f"merged model has tensors the base lacks: {sorted(missing)[:5]}")
        self.base = {k: base[k].float() for k in merged_at_one}
        self.direction = {k: merged_at_one[k].float() - self.base[k] for k in merged_at_one}

    def at(self, lam: float) -> State:
        return {k: self.base[k] + lam * self.direction[k] for k in self.base}


def max_abs_difference(a: State, b: State) -> float:
    """max over shared tensors of max |a − b| (weight units); raises if the key sets differ."""
    if set(a) != set(b):
        raise KeyError(f"tensor names differ: {sorted(set(a) ^ set(b))[:5]}")
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
