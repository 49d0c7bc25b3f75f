"""Work-around for a mergekit 0.1.5 planner crash on BERT (used only while mergekit_awd lacks a fix).

``MergePlanner.plan_tensor`` checks optional weights with ``[w_in.name] + (w_in.aliases or [])``,
but ``WeightInfo.aliases`` is a tuple, so every architecture with an optional *aliased* weight
(BERT's ``embeddings.position_ids``) fails with "can only concatenate list (not "tuple") to list".
The replacement does the same presence check tuple-safely: an optional weight that no input model
holds is skipped (as mergekit intends); a present one is planned by mergekit's own code unchanged.
"""

from __future__ import annotations

from typing import Any, List

from mergekit.io.tasks import LoaderCache
from mergekit.plan import MergePlanner

_ORIGINAL_PLAN_TENSOR = MergePlanner.plan_tensor


def optional_weight_present(weights_in: List[Any], models: List[Any]) -> bool:
    """Whether any input model holds the weight under its name or one of its aliases."""
    for model, w_in in zip(models, weights_in):
        paths = LoaderCache().get(model).index.tensor_paths
        if any(name in paths for name in (w_in.name, *(w_in.aliases or ()))):
            return True
    return False


def _plan_tensor(self: MergePlanner, weight, weights_in, models, cfg_reader) -> None:
    if weight.optional:
        if not optional_weight_present(weights_in, models):
            return
        weight = weight.model_copy(update={"optional": False})
    _ORIGINAL_PLAN_TENSOR(self, weight, weights_in, models, cfg_reader)


def planner_needs_fix() -> bool:
    """True while neither mergekit nor mergekit_awd's planner overrides the faulty ``plan_tensor``."""
    from mergekit_awd.mergekit_adapter.planner import AWDMergePlanner

    overridden = "plan_tensor" in AWDMergePlanner.__dict__
    return not overridden and MergePlanner.plan_tensor is _ORIGINAL_PLAN_TENSOR and _has_list_plus_aliases()


def _has_list_plus_aliases() -> bool:
    import inspect

    return "(w_in.aliases or [])" in inspect.getsource(_ORIGINAL_PLAN_TENSOR)


def apply() -> bool:
    """Install the tuple-safe ``plan_tensor`` when needed; returns whether it was installed."""
    if not planner_needs_fix():
        return False
    MergePlanner.plan_tensor = _plan_tensor
    return True
