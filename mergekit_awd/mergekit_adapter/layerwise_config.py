"""Learned layer-wise coefficients as a plain mergekit configuration (issue #29).

θ(Λ) = θ_base + Σ_i Σ_g λ_{i,g} D_i^g (``core.layerwise``) is what ``task_arithmetic`` computes with a
per-model ``weight`` that differs by tensor (D_i = τ_i), what ``awd`` with ``combine: task_arithmetic``
computes (D_i = τ_i − δ: δ does not depend on the weights), both with ``lambda: 1`` and ``normalize:
false``, and what ``tsv`` computes with ``lambda: 1`` and positive weights (D_i = task i's block of
TSV-M, ``core.tsv.tsv_task_parts``, on its matrices; τ_i / K on the averaged tensors).  ``LAYERWISE_FORMS``
holds, per method, the parameters written, Λ⁰ and the least coefficient.  mergekit gives a parameter
per tensor through filters: a list of ``{filter, value}`` whose first entry whose filter is a substring
of the tensor's name applies (``mergekit.config.evaluate_setting``).  ``weight_filters`` writes one entry per group (a block's
``.layers.N.``; each tensor name of the other groups) and checks, with mergekit's own rule, that every
tensor gets its group's coefficient; so ``mergekit-awd merge`` of the written configuration gives the
learned weights (float32: to rounding), with no part of this package needed to reproduce them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch
from mergekit.config import ConditionalParameter, evaluate_setting

from mergekit_awd.core.layerwise import INITIAL_COEFFICIENT, Grouping, tensor_group
from mergekit_awd.core.selection import block_text
from mergekit_awd.errors import ConfigError


@dataclass(frozen=True)
class LayerwiseForm:
    """A method whose output is θ_base + Σ_i w_i D_i with the weights outside D_i: the shared parameters
    that make it so (``written``), Λ⁰ (``initial``) and the least coefficient (``minimum``; None: any)."""

    written: Mapping[str, Any] = field(default_factory=lambda: {"lambda": 1.0, "normalize": False})
    initial: float = INITIAL_COEFFICIENT
    minimum: Optional[float] = None


# tsv: Λ⁰ = 1, the paper's α with unit weights; weights stay > 0 (a zero task matrix would change the
# kept rank k = ⌊r/K⌋ and a negative one the singular vectors' signs: the parts would no longer hold)
TSV_MINIMUM_WEIGHT = 1e-3
LAYERWISE_FORMS: Dict[str, LayerwiseForm] = {
    "task_arithmetic": LayerwiseForm(),
    "awd": LayerwiseForm(),
    "tsv": LayerwiseForm({"lambda": 1.0}, 1.0, TSV_MINIMUM_WEIGHT),
}
LAYERWISE_METHODS = tuple(LAYERWISE_FORMS)
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
    """``config`` (a configuration of a ``LAYERWISE_FORMS`` method with ``models`` in the coefficients' row
    order, the base not among them) with every model's ``weight`` replaced by its row of Λ [K, G] as
    filters over ``names`` (the merged tensors), and the method's written parameters (``lambda: 1`` …)."""
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
    form = LAYERWISE_FORMS[method]
    if form.minimum is not None and float(coefficients.min()) < form.minimum:
        raise ConfigError(f"{method}: layer-wise weights must be at least {form.minimum} (got "
                          f"{float(coefficients.min()):.3g}); its per-task parts hold for positive weights only")
    for model, row in zip(models, coefficients.tolist()):
        model["parameters"] = {**(model.get("parameters") or {}),
                               "weight": weight_filters(names, groups, row, grouping)}
    out["parameters"] = {**(out.get("parameters") or {}), **form.written}
    return out


__all__ = ["LayerwiseForm", "LAYERWISE_FORMS", "LAYERWISE_METHODS", "TSV_MINIMUM_WEIGHT", "weight_filters",
           "layerwise_configuration"]
