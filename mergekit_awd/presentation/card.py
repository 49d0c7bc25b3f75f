"""Extend mergekit's generated README.md with what our method did, and Hub metadata.

Keeps mergekit's card text and adds, between ``SECTION_BEGIN``/``SECTION_END`` (replaced, not
duplicated, when written again):

* the method with its paper link and the resolved parameters (α, λ, solver, scope, ...), the
  method's own first (``PackageMergeMethod.card_parameter_labels``);
* the method's figures of its report: the parts it names (``PackageMergeMethod.card_parts``),
  drawn by ``card_sections`` (the cosine table and heatmap of δ's solves, a report section's means).

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

from huggingface_hub import ModelCard, metadata_load
from mergekit.card import method_md
from mergekit.common import ModelReference
from mergekit.config import MergeConfiguration

from mergekit_awd.constants import CARD_FILENAME, MODEL_CONFIG
from mergekit_awd.hub_ids import HUB_ID, is_hub_id
from mergekit_awd.mergekit_adapter.registration import method_for
from mergekit_awd.presentation.card_sections import method_lines

LOG = logging.getLogger(__name__)

SECTION_BEGIN = "<!-- mergekit-awd: begin -->"
SECTION_END = "<!-- mergekit-awd: end -->"
BASE_TAGS: Tuple[str, ...] = ("mergekit", "merge")
LICENSE_KEYS: Tuple[str, ...] = ("license", "license_name", "license_link")

_SECTION = re.compile(re.escape(SECTION_BEGIN) + r".*?" + re.escape(SECTION_END) + r"\n?", re.DOTALL)


# --------------------------------------------------------------------------- inputs


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
    config_path = os.path.join(folder, MODEL_CONFIG)
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


# --------------------------------------------------------------------------- markdown


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value)}`"
    return str(value)


def parameters_table(method: str, parameters: Dict[str, Any]) -> str:
    """The resolved parameters: the method's own labels first (``card_parameter_labels``), then the rest."""
    ours = method_for(method)
    names = list(ours.card_parameter_labels) if ours is not None else []
    shown = {key for key, _ in names}
    names += [(key, key) for key in sorted(parameters) if key not in shown]
    rows = [f"| {label} | {_format_value(parameters[key])} |" for key, label in names if key in parameters]
    return "\n".join(["| parameter | value |", "| --- | --- |", *rows])


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
    ours = method_for(method)
    if ours is not None:
        lines += method_lines(ours, report, labels, out_dir)
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


def append_card_note(out_dir: str, note: str) -> Optional[str]:
    """Add ``note`` as a paragraph at the end of ``out_dir/README.md`` (None: no card was written)."""
    path = os.path.join(out_dir, CARD_FILENAME)
    if not os.path.isfile(path):
        return None
    card = ModelCard.load(path)
    card.text = card.text.rstrip("\n") + "\n\n" + note.strip() + "\n"
    card.save(path)
    return path


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
    existing_ids = [b for b in _merged_list(data.base_model) if HUB_ID.match(b)]
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
