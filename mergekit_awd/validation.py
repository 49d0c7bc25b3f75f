"""Checks a merge configuration before any heavy work or any output.

mergekit ignores unknown parameter names, validates values only while planning tensor by tensor,
and finds shape mismatches only when it reaches the tensor.  These checks run first and raise one
``ConfigError`` that names the file, the key or model, and what would be accepted.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Dict, Iterator, List, Optional, Tuple

from mergekit.config import ConditionalParameter, MergeConfiguration
from mergekit.merge_methods.base import MergeMethod
from pydantic import ValidationError

from mergekit_awd.config_loading import ConfigError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def parameter_blocks(config: MergeConfiguration) -> Iterator[Tuple[str, Optional[Dict[str, Any]]]]:
    """(location, parameters) for every place a configuration sets parameters."""
    yield "parameters", config.parameters
    for i, model in enumerate(config.models or []):
        yield f"models[{i}] ({model.model}).parameters", model.parameters
    for i, piece in enumerate(config.slices or []):
        yield f"slices[{i}].parameters", piece.parameters
        for j, src in enumerate(piece.sources):
            yield f"slices[{i}].sources[{j}] ({src.model}).parameters", src.parameters
    for name, module in (config.modules or {}).items():
        yield f"modules.{name}.parameters", module.parameters
        for i, model in enumerate(module.models or []):
            yield f"modules.{name}.models[{i}] ({model.model}).parameters", model.parameters


def _leaf_values(setting: Any) -> Iterator[Any]:
    """Scalar values inside a setting: plain, gradient lists, and filtered (conditional) values."""
    if isinstance(setting, ConditionalParameter):
        yield from _leaf_values(setting.value)
    elif isinstance(setting, list):
        for item in setting:
            yield from _leaf_values(item)
    else:
        yield setting


def _first_error(error: ValidationError) -> str:
    return "; ".join(e["msg"] for e in error.errors()[:1])


def check_parameters(config: MergeConfiguration, method: MergeMethod, label: str) -> None:
    """Every parameter name is one of the method's, and every value validates."""
    specs = {p.name: p for p in method.spec.parameters}
    accepted = ", ".join(sorted(specs))
    for location, block in parameter_blocks(config):
        for key, setting in (block or {}).items():
            spec = specs.get(key)
            if spec is None:
                raise ConfigError(
                    f"{label}: unknown parameter {key!r} in {location} for merge_method "
                    f"{config.merge_method}; accepted: {accepted}"
                )
            for value in _leaf_values(setting):
                try:
                    spec.validate(value)
                except ValidationError as error:
                    raise ConfigError(
                        f"{label}: {location}.{key} = {value!r} is not accepted: {_first_error(error)}"
                        + (f" ({spec.description})" if spec.description else "")
                    ) from None


def check_inputs(config: MergeConfiguration, method: MergeMethod, label: str) -> None:
    """The base model and the number of fine-tuned models the method needs."""
    from mergekit.merge_methods.base import BasePolicy

    contract = method.spec.contract
    if contract.base == BasePolicy.REQUIRED and config.base_model is None:
        raise ConfigError(f"{label}: merge_method {config.merge_method} needs base_model (the model the fine-tunes started from)")
    fine_tunes = [m for m in config.referenced_models() if m != config.base_model]
    needed = contract.min_non_base or 0
    if len(fine_tunes) < needed:
        raise ConfigError(
            f"{label}: merge_method {config.merge_method} needs at least {needed} fine-tuned "
            f"model(s) besides base_model; got {len(fine_tunes)}"
        )


def _looks_like_hub_id(path: str) -> bool:
    """ORG/NAME that is not a path into a local folder (``fam/ft_9`` with ``fam/`` present is local)."""
    if not _HUB_ID.match(path) or path.startswith((".", "/", "~")):
        return False
    return not ("/" in path and os.path.isdir(path.split("/", 1)[0]))


def local_model_dir(reference) -> Optional[str]:
    """The local folder of a model reference, None for a Hub id; error for a missing local path."""
    path = os.path.expanduser(reference.model.path)
    if os.path.isdir(path):
        return path
    if os.path.exists(path):
        raise ConfigError(f"model {reference.model.path!r} is a file, not a model folder")
    if _looks_like_hub_id(reference.model.path):
        return None
    raise ConfigError(f"model folder {reference.model.path!r} does not exist")


def safetensors_shapes(folder: str) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Tensor shapes from the safetensors headers of a model folder (no data is read)."""
    from safetensors import safe_open

    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as handle:
            files = sorted(set(json.load(handle)["weight_map"].values()))
    elif os.path.isfile(os.path.join(folder, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        return None
    shapes: Dict[str, Tuple[int, ...]] = {}
    for name in files:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise ConfigError(f"{folder}: shard {name} listed in its index is missing")
        with safe_open(path, framework="pt") as handle:
            for key in handle.keys():
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _architectures(folder: str) -> List[str]:
    try:
        with open(os.path.join(folder, "config.json"), encoding="utf-8") as handle:
            return list(json.load(handle).get("architectures") or [])
    except (OSError, ValueError) as error:
        raise ConfigError(f"{folder}: no readable config.json ({error})") from None


def check_models(config: MergeConfiguration, label: str, allow_crimes: bool = False) -> None:
    """Local model folders exist, share the base's architecture, and match its tensor shapes."""
    base = config.base_model
    models = config.referenced_models()
    folders = {}
    for reference in models:
        try:
            folders[reference] = local_model_dir(reference)
        except ConfigError as error:
            raise ConfigError(f"{label}: {error}") from None
    if base is None or folders.get(base) is None:
        return
    base_dir = folders[base]
    base_arch = _architectures(base_dir)
    base_shapes = safetensors_shapes(base_dir)
    for reference, folder in folders.items():
        if reference == base or folder is None or reference.lora is not None:
            continue
        arch = _architectures(folder)
        if not allow_crimes and arch and base_arch and arch != base_arch:
            raise ConfigError(
                f"{label}: model {reference} is {arch} but base_model {base} is {base_arch} "
                "(mixing architectures needs --allow-crimes)"
            )
        shapes = safetensors_shapes(folder)
        if base_shapes is None or shapes is None:
            continue
        for name, shape in base_shapes.items():
            other = shapes.get(name)
            if other is not None and other != shape:
                raise ConfigError(
                    f"{label}: tensor {name} has shape {list(other)} in {reference} but "
                    f"{list(shape)} in base_model {base}"
                )


def check_method_name(config: MergeConfiguration, label: str) -> None:
    """``merge_method`` names a registered method (mergekit only finds out after loading)."""
    from mergekit.merge_methods import registered_methods

    names = sorted(m.spec.name for m in registered_methods())
    if config.merge_method not in names:
        raise ConfigError(
            f"{label}: unknown merge_method {config.merge_method!r}; accepted: {', '.join(names)}"
        )


def validate_merge(config: MergeConfiguration, label: str, method: Optional[MergeMethod], allow_crimes: bool) -> None:
    """All checks; ``method`` is given for this package's methods (strict parameter checks)."""
    check_method_name(config, label)
    if method is not None:
        check_parameters(config, method, label)
        check_inputs(config, method, label)
    check_models(config, label, allow_crimes=allow_crimes)


__all__ = ["validate_merge", "check_method_name", "check_parameters", "check_inputs", "check_models", "parameter_blocks"]
