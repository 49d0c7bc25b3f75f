"""Learned layer-wise coefficients as a plain mergekit configuration (issue #29).

θ(Λ) = θ_base + Σ_i Σ_g λ_{i,g} D_i^g (``core.layerwise``) is what ``task_arithmetic`` computes with a
per-model ``weight`` that differs by tensor (D_i = τ_i), and what ``awd`` with ``combine:
task_arithmetic`` computes (D_i = τ_i − δ: δ does not depend on the weights), with ``lambda: 1`` and
``normalize: false``.  mergekit gives a parameter per tensor through filters: a list of ``{filter,
value}`` whose first entry whose filter is a substring of the tensor's name applies
(``mergekit.config.evaluate_setting``).  ``weight_filters`` writes one entry per group (a block's
``.layers.N.``; each tensor name of the other groups) and checks, with mergekit's own rule, that every
tensor gets its group's coefficient; so ``mergekit-awd merge`` of the written configuration gives the
learned weights (float32: to rounding), with no part of this package needed to reproduce them.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Mapping, Sequence

import torch
from mergekit.config import ConditionalParameter, evaluate_setting

from mergekit_awd.core.layerwise import Grouping, tensor_group
from mergekit_awd.core.selection import block_text
from mergekit_awd.errors import ConfigError

# methods whose output is θ_base + Σ_i w_i D_i with the weights outside D_i (written with λ = 1)
LAYERWISE_METHODS = ("task_arithmetic", "awd")
COEFFICIENT_DIGITS = 9  # significant digits written: float32 coefficients survive the round trip


def _filter_text(name: str, group: str) -> str:
    """The filter of a tensor's group: a block's ``.layers.N.`` part of the name, else the name itself."""
    return block_text(name) if group.startswith("block.") else name


def weight_filters(names: Sequence[str], groups: Sequence[str], values: Sequence[float],
                   grouping: Grouping = "layer") -> Any:
    """One model's ``weight``: a number (``grouping: task``) or filters giving every tensor of
    ``names`` its group's value (``values`` in the order of ``groups``)."""
    by_group = {group: float(f"{float(v):.{COEFFICIENT_DIGITS}g}") for group, v in zip(groups, values)}
    if grouping == "task":
        return by_group["all"]
    exact, blocks = {}, {}
    for name in names:
        group = tensor_group(name, grouping)
        text = _filter_text(name, group)
        (blocks if group.startswith("block.") else exact)[text] = by_group[group]
    entries = [{"filter": text, "value": value} for text, value in {**exact, **blocks}.items()]
    _check_filters(names, entries, by_group, grouping)
    return entries


def _check_filters(names: Sequence[str], entries: List[Dict[str, Any]], by_group: Mapping[str, float],
                   grouping: Grouping) -> None:
    """Every tensor resolves, by mergekit's rule, to its own group's coefficient."""
    setting = [ConditionalParameter(value=e["value"], filter=e["filter"]) for e in entries]
    for name in names:
        resolved = evaluate_setting(name, setting, validate=float)
        if resolved != by_group[tensor_group(name, grouping)]:
            raise ConfigError(f"layer-wise weights: tensor {name} would get {resolved}, not its group's "
                              f"{by_group[tensor_group(name, grouping)]} (its name defeats the group filters)")


def layerwise_configuration(config: Mapping[str, Any], coefficients: torch.Tensor, groups: Sequence[str],
                            names: Sequence[str], grouping: Grouping = "layer") -> Dict[str, Any]:
    """``config`` (a task_arithmetic or awd configuration with ``models`` in the coefficients' row
    order, the base not among them) with every model's ``weight`` replaced by its row of Λ [K, G] as
    filters over ``names`` (the merged tensors), ``lambda: 1`` and ``normalize: false``."""
    method = config.get("merge_method")
    combine = (config.get("parameters") or {}).get("combine", "task_arithmetic")
    if method not in LAYERWISE_METHODS or combine != "task_arithmetic":
        raise ConfigError(f"layer-wise coefficients are written for {', '.join(LAYERWISE_METHODS)} (awd with "
                          f"combine: task_arithmetic), not {method}" + (f" with combine: {combine}" if method == "awd"
                                                                        else ""))
    out = copy.deepcopy(dict(config))
    models = [m for m in out["models"] if m.get("model") != out.get("base_model")]
    if len(models) != coefficients.shape[0]:
        raise ConfigError(f"{coefficients.shape[0]} rows of coefficients for {len(models)} models")
    for model, row in zip(models, coefficients.tolist()):
        model["parameters"] = {**(model.get("parameters") or {}),
                               "weight": weight_filters(names, groups, row, grouping)}
    out["parameters"] = {**(out.get("parameters") or {}), "lambda": 1.0, "normalize": False}
    return out


__all__ = ["LAYERWISE_METHODS", "weight_filters", "layerwise_configuration"]
