"""The one rule for every command that writes: OUT never overlaps an input.

Every local path a command reads (the base model, each fine-tune, each LoRA adapter, a
``tokenizer_source`` model, the config file, mergekit's LoRA merge cache and transformers cache,
the Hugging Face cache when a Hub model is used) is resolved (``~``, ``..`` and symbolic links),
and OUT, resolved the same way, may be none of them, lie inside none of them, and contain none of
them.  This holds with or without ``--overwrite``: no command writes where its inputs are.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, List, Optional

from mergekit_awd.errors import OutputPathError
from mergekit_awd.hub_ids import is_hub_id


@dataclass(frozen=True)
class InputPath:
    """A local path a command reads: what it is, as written, and resolved."""

    role: str
    given: str
    resolved: str


def resolve(path: str) -> str:
    """Absolute path with ``~``, ``..`` and every symbolic link (a dangling one too) resolved."""
    return os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def _local(role: str, path: Optional[str]) -> Optional[InputPath]:
    """An InputPath when ``path`` exists locally (mergekit's own test for a local model)."""
    if not path:
        return None
    expanded = os.path.expanduser(str(path))
    if not os.path.lexists(expanded):
        return None
    return InputPath(role, str(path), resolve(expanded))


def model_reference_inputs(reference: Any, role: str) -> List[InputPath]:
    """The model folder and LoRA adapter of a mergekit ``ModelReference`` that exist locally."""
    found = [_local(role, reference.model.path)]
    if reference.lora is not None:
        found.append(_local(f"LoRA adapter of {reference.model.path}", reference.lora.path))
    return [item for item in found if item is not None]


def merge_inputs(config: Any, config_file: Optional[str] = None, options: Any = None) -> List[InputPath]:
    """Every local path a merge (or inspect, compress) of ``config`` reads or that mergekit writes to."""
    found: List[InputPath] = []
    references = list(config.referenced_models())
    for reference in references:
        role = "base model" if reference == config.base_model else "input model"
        found += model_reference_inputs(reference, role)
    tokenizer_source = getattr(config, "tokenizer_source", None)
    if tokenizer_source is not None and hasattr(tokenizer_source, "model"):
        found += model_reference_inputs(tokenizer_source, "tokenizer_source model")
    if config_file:
        found.append(InputPath("config file", config_file, resolve(config_file)))
    for role, attribute in (("LoRA merge cache", "lora_merge_cache"), ("transformers cache", "transformers_cache")):
        item = _local(role, getattr(options, attribute, None)) if options is not None else None
        if item is not None:
            found.append(item)
    if any(is_hub_id(r.model.path) for r in references):
        from huggingface_hub import constants

        item = _local("Hugging Face cache", constants.HF_HUB_CACHE)
        if item is not None:
            found.append(item)
    return found


def _inside(path: str, folder: str) -> bool:
    return path.startswith(folder.rstrip(os.sep) + os.sep)


def check_out_disjoint(out_path: str, inputs: Iterable[InputPath], command: str = "merge") -> str:
    """Resolved OUT; ``OutputPathError`` naming both paths when OUT is, is inside, or contains an input."""
    out = resolve(out_path)
    for item in inputs:
        if out == item.resolved:
            relation = "is"
        elif _inside(out, item.resolved):
            relation = "is inside"
        elif _inside(item.resolved, out):
            relation = "contains"
        else:
            continue
        shown = f"{out_path!s}" + (f" (resolved: {out})" if out != os.path.abspath(out_path) else "")
        given = item.given + (f" (resolved: {item.resolved})" if item.resolved != os.path.abspath(item.given) else "")
        raise OutputPathError(
            f"{command} output {shown} {relation} the {item.role} {given}: no command writes where its "
            "inputs are (with or without --overwrite); choose an output folder outside every input",
            path=out, input_path=item.resolved,
        )
    return out


def config_file_of(label: str) -> Optional[str]:
    """The config file behind ``load_config``'s label, or None for YAML text, dicts and objects."""
    return label if not label.startswith("<") and os.path.isfile(label) else None


__all__ = ["InputPath", "resolve", "merge_inputs", "model_reference_inputs", "check_out_disjoint", "config_file_of"]
