"""Extend mergekit's generated README.md with what AWD (or TSV) did, and Hub metadata.

Keeps mergekit's card text and adds, between ``SECTION_BEGIN``/``SECTION_END`` (replaced, not
duplicated, when written again):

* the method with its paper link and the resolved parameters (α, λ, solver, scope, ...);
* for AWD, a table of pairwise |cos| between task vectors before and after disentanglement
  and a heatmap PNG of the same (``CARD_HEATMAP``, saved next to the card);
* for TSV, the interference figures recorded in ``tsv_report.json``.

Metadata goes through ``huggingface_hub.ModelCard``: ``base_model`` lists the inputs given as
Hub ids, ``tags`` include mergekit, merge and the method, ``library_name`` is transformers and
``license`` is copied from the base model's card (or config) when it names one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from huggingface_hub import ModelCard, metadata_load
from mergekit.card import method_md
from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration

LOG = logging.getLogger(__name__)

CARD_FILENAME = "README.md"
CARD_HEATMAP = "awd_cosines.png"
SECTION_BEGIN = "<!-- mergekit-awd: begin -->"
SECTION_END = "<!-- mergekit-awd: end -->"
BASE_TAGS: Tuple[str, ...] = ("mergekit", "merge")
LICENSE_KEYS: Tuple[str, ...] = ("license", "license_name", "license_link")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_SECTION = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END) + r"\n?", re.DOTALL)

# How each AWD parameter reads in the card, in this order.
AWD_PARAMETER_NAMES: Tuple[Tuple[str, str], ...] = (
    ("alpha", "α (weight of ‖δ‖)"),
    ("lambda", "λ (scale of Σ wᵢ τ̂ᵢ)"),
    ("solver", "solver"),
    ("optimizer", "optimizer"),
    ("steps", "steps"),
    ("lr", "step size β"),
    ("units", "units"),
    ("scope", "scope"),
    ("select", "selected tensors"),
    ("normalize", "normalize"),
)


# --------------------------------------------------------------------------- inputs


def is_hub_id(path: str) -> bool:
    """A model given as ``org/name`` that is not a local folder."""
    return bool(_HUB_ID.match(path)) and not os.path.exists(path)


def hub_model_ids(config: MergeConfiguration) -> List[str]:
    """The inputs (base first, then the others in config order, LoRAs too) that are Hub ids."""
    refs: List[ModelReference] = [config.base_model] if config.base_model is not None else []
    refs += task_vector_models(config)
    refs += sorted(config.referenced_models(), key=str)
    ids: List[str] = []
    for ref in refs:
        for path in (ref.model.path, ref.lora.path if ref.lora else None):
            if path and is_hub_id(path) and path not in ids:
                ids.append(path)
    return ids


def task_vector_models(config: MergeConfiguration) -> List[ModelReference]:
    """The non-base models in the order mergekit hands them to the method (one row per τᵢ)."""
    base = config.base_model
    if config.models:
        ordered = [m.model for m in config.models]
    elif config.slices:
        ordered = [s.model for s in config.slices[0].sources]
    else:
        module = next(iter((config.modules or {}).values()), None)
        if module is None:
            ordered = []
        elif module.models:
            ordered = [m.model for m in module.models]
        else:
            ordered = [s.model for s in module.slices[0].sources]
    return [m for m in ordered if m != base]


def model_labels(models: Sequence[Any]) -> List[str]:
    """Short names: Hub ids as they are, local folders by their last path component."""
    paths = [str(m) for m in models]
    short = [p if is_hub_id(p) else os.path.basename(os.path.normpath(p)) or p for p in paths]
    return short if len(set(short)) == len(short) else paths


def _local_license(folder: str) -> Dict[str, str]:
    readme = os.path.join(folder, CARD_FILENAME)
    if os.path.isfile(readme):
        metadata = metadata_load(readme) or {}
        found = {k: str(v) for k, v in metadata.items() if k in LICENSE_KEYS and v}
        if "license" in found:
            return found
    config_path = os.path.join(folder, "config.json")
    if os.path.isfile(config_path):
        with open(config_path, encoding="utf-8") as handle:
            value = json.load(handle).get("license")
        if isinstance(value, str) and value:
            return {"license": value}
    return {}


def _hub_readme(repo_id: str, revision: Optional[str]) -> Optional[str]:
    """The Hub model's README.md from the cache, else downloaded when online; None if unavailable."""
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, CARD_FILENAME, revision=revision)
    if isinstance(cached, str):
        return cached
    if constants.is_offline_mode():
        return None
    try:
        return hf_hub_download(repo_id, CARD_FILENAME, revision=revision)
    except Exception as error:  # no card, no network, gated repo: the license is just unknown
        LOG.info("no model card for %s (%s); license left out", repo_id, type(error).__name__)
        return None


def base_model_license(config: MergeConfiguration) -> Dict[str, str]:
    """``license`` (and ``license_name``/``license_link``) of the base model, when it states one."""
    base = config.base_model
    if base is None:
        return {}
    path = base.model.path
    if os.path.isdir(path):
        return _local_license(path)
    if not is_hub_id(path):
        return {}
    readme = _hub_readme(path, base.model.revision)
    if readme is None:
        return {}
    metadata = metadata_load(readme) or {}
    return {k: str(v) for k, v in metadata.items() if k in LICENSE_KEYS and v}


# --------------------------------------------------------------------------- report figures


def mean_cosine_matrices(report: Dict[str, Any]) -> Optional[Tuple[torch.Tensor, torch.Tensor, int]]:
    """Mean over solved scopes of the |cos| matrices before and after, and the scope count.

    ``scope: tensor`` has one scope per disentangled tensor (so this is the mean over tensors);
    ``scope: model`` has one scope (its matrices as they are).  None when nothing was solved.
    """
    before, after = [], []
    for entry in (report.get("scopes") or {}).values():
        if entry.get("active", 0) >= 2 and "abs_cos_before" in entry:
            before.append(torch.tensor(entry["abs_cos_before"], dtype=torch.float64))
            after.append(torch.tensor(entry["abs_cos_after"], dtype=torch.float64))
    if not before or len({m.shape for m in before}) != 1:
        return None
    return torch.stack(before).mean(0), torch.stack(after).mean(0), len(before)


def mean_delta_norm_ratio(report: Dict[str, Any]) -> Optional[float]:
    ratios = [e["delta_norm_ratio"] for e in (report.get("scopes") or {}).values()
              if e.get("active", 0) >= 2 and "delta_norm_ratio" in e]
    return sum(ratios) / len(ratios) if ratios else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def interference_means(report: Dict[str, Any]) -> Tuple[Dict[str, float], int]:
    """Mean over tensors of every numeric figure in the report's ``interference`` section.

    A list of numbers (one per task, such as ``energy_kept``) counts as its mean.
    """
    entries = list((report.get("interference") or {}).values())
    sums: Dict[str, List[float]] = {}
    for entry in entries:
        values = entry.items() if isinstance(entry, dict) else [("interference", entry)]
        for key, value in values:
            if isinstance(value, list) and value and all(_is_number(v) for v in value):
                value = sum(value) / len(value)
            if _is_number(value):
                sums.setdefault(key, []).append(float(value))
    return {key: sum(v) / len(v) for key, v in sums.items()}, len(entries)


# --------------------------------------------------------------------------- markdown


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def parameters_table(method: str, parameters: Dict[str, Any]) -> str:
    names = list(AWD_PARAMETER_NAMES) if method == "awd" else []
    shown = {key for key, _ in names}
    names += [(key, key) for key in sorted(parameters) if key not in shown]
    rows = [f"| {label} | {_format_value(parameters[key])} |" for key, label in names if key in parameters]
    return "\n".join(["| parameter | value |", "| --- | --- |", *rows])


def cosine_table(labels: Sequence[str], before: torch.Tensor, after: torch.Tensor) -> str:
    """One row per pair of task vectors: |cos| before and after disentanglement."""
    rows = ["| task vector i | task vector j | abs cos before | abs cos after |", "| --- | --- | ---: | ---: |"]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            rows.append(f"| {labels[i]} | {labels[j]} | {float(before[i, j]):.4f} | {float(after[i, j]):.4f} |")
    return "\n".join(rows)


def _awd_figures(report: Dict[str, Any], labels: List[str], out_dir: str) -> List[str]:
    summary = report.get("summary", {})
    parameters = report.get("parameters", {})
    lines = [
        f"Disentangled tensors: {summary.get('disentangled_tensors', 0)}; merged by plain task "
        f"arithmetic: {summary.get('task_arithmetic_tensors', 0)}.",
        "",
    ]
    matrices = mean_cosine_matrices(report)
    if matrices is None:
        lines.append("No tensor had two or more non-zero task vectors, so AWD removed nothing (δ = 0).")
        return lines
    before, after, count = matrices
    if len(labels) != before.shape[0]:
        labels = [f"τ{i + 1}" for i in range(before.shape[0])]
    if parameters.get("scope") == "model":
        how = "one δ over all selected tensors" if count == 1 else f"mean over {count} model-wide scopes"
    else:
        how = f"one δ per tensor; mean over the {count} disentangled tensors"
    ratio = mean_delta_norm_ratio(report)
    lines += [
        "### Task-vector cosines before and after disentanglement",
        "",
        f"Pairwise |cos(τᵢ, τⱼ)| of the task vectors τᵢ = θᵢ − θ_base and of the disentangled "
        f"vectors τ̂ᵢ = τᵢ − δ ({how}). Mean |cos| over pairs: "
        f"{summary.get('mean_abs_cos_before', 0.0):.4f} → {summary.get('mean_abs_cos_after', 0.0):.4f}"
        + (f"; ‖δ‖ / mean‖τᵢ‖ = {ratio:.4f}." if ratio is not None else "."),
        "",
        cosine_table(labels, before, after),
        "",
    ]
    try:
        from mergekit_awd.tools.heatmap import HeatmapPanel, save_heatmaps

        save_heatmaps(
            os.path.join(out_dir, CARD_HEATMAP),
            [HeatmapPanel("before: |cos(τᵢ, τⱼ)|", before, labels, labels),
             HeatmapPanel("after: |cos(τ̂ᵢ, τ̂ⱼ)|", after, labels, labels)],
            title="Task-vector |cos| before and after AWD",
        )
        lines += [f"![Pairwise task-vector cosines before and after AWD]({CARD_HEATMAP})", ""]
    except ImportError:
        LOG.warning("matplotlib is not installed: the model card has no %s heatmap", CARD_HEATMAP)
    return lines


def _interference_figures(report: Dict[str, Any]) -> List[str]:
    means, count = interference_means(report)
    if not means:
        return []
    lines = ["### Task interference", ""]
    if "sti" in means:
        lines += [f"Singular Task Interference (STI, weight units) summed over the {count} task matrices: "
                  f"{means['sti'] * count:.6g} (mean per matrix {means['sti']:.6g}).", ""]
    rows = [f"| {key} | {value:.6g} |" for key, value in sorted(means.items())]
    return lines + [f"Mean over the {count} tensors recorded in the report:", "",
                    "| figure | mean |", "| --- | ---: |", *rows, ""]


def method_section(method: str, report: Dict[str, Any], labels: List[str], out_dir: str) -> str:
    """The markdown this package adds to the card, between the section markers."""
    lines = [
        SECTION_BEGIN,
        f"## {method} merge details",
        "",
        f"Method: {method_md(method)}.",
        "",
        parameters_table(method, report.get("parameters", {})),
        "",
    ]
    if report.get("scopes") or method == "awd":
        lines += _awd_figures(report, labels, out_dir)
    lines += _interference_figures(report)
    lines.append(SECTION_END)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the card


def _merged_list(*lists: Optional[Sequence[str]]) -> List[str]:
    out: List[str] = []
    for values in lists:
        for value in [values] if isinstance(values, str) else values or []:
            if value not in out:
                out.append(value)
    return out


def write_model_card(out_dir: str, config: MergeConfiguration, report: Dict[str, Any]) -> Optional[str]:
    """Extend ``out_dir/README.md`` (mergekit's card) in place; return its path.

    Returns None when mergekit wrote no card (``--no-write-model-card``): that choice stands.
    """
    path = os.path.join(out_dir, CARD_FILENAME)
    if not os.path.isfile(path):
        return None
    card = ModelCard.load(path)
    method = report.get("method", config.merge_method)
    data = card.data
    existing_ids = [b for b in _merged_list(data.base_model) if _HUB_ID.match(b)]
    base_models = _merged_list(hub_model_ids(config), existing_ids)
    data.base_model = base_models or None
    if base_models:
        data.base_model_relation = "merge"
    data.tags = _merged_list(data.tags, BASE_TAGS, [method])
    data.library_name = "transformers"
    for key, value in base_model_license(config).items():
        setattr(data, key, value)
    # the report names each scope's rows; older reports fall back to mergekit's planning order
    reported = next((s["models"] for s in report.get("scopes", {}).values() if s.get("models")), None)
    labels = model_labels(reported or task_vector_models(config))
    text = _SECTION.sub("", card.text).rstrip("\n")
    card.text = text + "\n\n" + method_section(method, report, labels, out_dir)
    card.save(path)
    return path
