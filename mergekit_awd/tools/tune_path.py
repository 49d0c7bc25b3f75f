"""The model ``mergekit-awd tune`` scores, moved along θ(λ) = θ_base + λ·D in place or loaded with a
merge's weights; tensors read from safetensors files one at a time."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch


def _weight_files(folder: str) -> List[str]:
    from mergekit_awd.pipeline.model_files import SAFETENSORS_WEIGHTS, weight_files

    return list(weight_files(folder, names=(SAFETENSORS_WEIGHTS,)).files)


def _named_tensors(folder: str, load: bool = True) -> Iterator[Tuple[str, Optional[torch.Tensor]]]:
    """(name, tensor) of every tensor in ``folder``'s safetensors files, one at a time (tensor None
    when not ``load``)."""
    from safetensors import safe_open

    for path in _weight_files(folder):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name) if load else None


class ModelOnPath:
    """The scored model, moved along θ(λ) = θ_base + λ·D in place (``tune.linear_in_lambda``), or loaded
    with a merge's weights (every other point).  Tied parameters are updated once."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.lam = 0.0
        self.direction: Dict[str, torch.Tensor] = {}

    def _parameters(self, names: Sequence[str]) -> Dict[str, torch.Tensor]:
        state = self.model.state_dict(keep_vars=True)
        found, seen = {}, set()
        for name in names:
            tensor = state.get(name)
            if tensor is None or id(tensor) in seen:
                continue
            seen.add(id(tensor))
            found[name] = tensor
        return found

    def set_direction(self, base_dir: str, merged_dir: str) -> None:
        """D = θ(1) − θ_base, float32, for every tensor the model has; the model reset to θ_base.
        Base tensors are read one at a time (memory: the model, D and one tensor)."""
        from safetensors import safe_open

        self.load(base_dir)
        self.direction = {}
        handles = [safe_open(path, framework="pt") for path in _weight_files(base_dir)]
        where = {name: handle for handle in handles for name in handle.keys()}
        names = [name for name, _ in _named_tensors(merged_dir, load=False)]
        targets = self._parameters([n for n in names if n in where])
        for name, merged in _named_tensors(merged_dir):
            if name in targets:
                self.direction[name] = merged.float() - where[name].get_tensor(name).float()
        self.lam = 0.0

    @torch.no_grad()
    def move_to(self, lam: float) -> None:
        targets = self._parameters(list(self.direction))
        for name, direction in self.direction.items():
            parameter = targets[name]
            parameter.add_(direction.to(device=parameter.device, dtype=parameter.dtype), alpha=lam - self.lam)
        self.lam = lam

    @torch.no_grad()
    def load(self, folder: str) -> None:
        """The model's weights from ``folder`` (a merge or the base)."""
        names = [name for name, _ in _named_tensors(folder, load=False)]
        targets = self._parameters(names)
        for name, tensor in _named_tensors(folder):
            if name in targets:
                targets[name].copy_(tensor.to(targets[name].dtype))
        self.direction, self.lam = {}, 0.0


__all__ = ["ModelOnPath"]
