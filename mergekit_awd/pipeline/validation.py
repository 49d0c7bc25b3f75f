"""Checks a merge configuration before any heavy work or any output.

mergekit ignores unknown parameter names, validates values only while planning tensor by tensor,
and finds shape mismatches only when it reaches the tensor.  These checks run first and raise one
``ConfigError`` that names the file, the key or model, and what would be accepted.
"""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

from mergekit.config import ConditionalParameter, MergeConfiguration
from mergekit.merge_methods.base import MergeMethod
from pydantic import ValidationError

from mergekit_awd.pipeline.config import ConfigError
from mergekit_awd.pipeline.model_checks import check_models


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
    """Every parameter name is one of the method's, and every value validates.

    Booleans are not numbers: ``true``/``false`` is refused where the parameter's type (inside
    ``Annotated``/``Optional``) is ``int`` or ``float`` (pydantic would read ``true`` as 1), and
    only ``true``/``false`` is a boolean (pydantic would read ``1`` or ``"yes"`` as true), as the
    core settings (``core.settings.check_value``) decide.
    """
    from typing import Union, get_args, get_origin

    from typing_extensions import Annotated

    def members(annotation: Any) -> List[Any]:
        if get_origin(annotation) is Annotated:
            return members(get_args(annotation)[0])
        if get_origin(annotation) is Union:
            return [m for a in get_args(annotation) for m in members(a)]
        return [annotation]

    specs = {p.name: p for p in method.spec.parameters}
    numeric = {name for name, p in specs.items()
               if bool not in members(p.value_type) and {int, float} & set(members(p.value_type))}
    boolean = {name for name, p in specs.items() if [m for m in members(p.value_type) if m is not type(None)] == [bool]}
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
                if isinstance(value, bool) and key in numeric:
                    raise ConfigError(
                        f"{label}: {location}.{key} = {value!r} is not accepted: a boolean is not a number"
                        + (f" ({spec.description})" if spec.description else "")
                    )
                if key in boolean and not isinstance(value, bool) and value is not None:
                    raise ConfigError(
                        f"{label}: {location}.{key} = {value!r} is not accepted: a boolean must be true or false"
                        + (f" ({spec.description})" if spec.description else "")
                    )
                try:
                    spec.validate(value)
                except ValidationError as error:
                    raise ConfigError(
                        f"{label}: {location}.{key} = {value!r} is not accepted: {_first_error(error)}"
                        + (f" ({spec.description})" if spec.description else "")
                    ) from None
    use_error = getattr(method, "parameter_use_error", None)
    if use_error is not None:
        given = sorted({key for _, block in parameter_blocks(config) for key in (block or {})})
        reason = use_error(dict(config.parameters or {}), given)
        if reason:
            raise ConfigError(f"{label}: {reason}")


def _setting_candidates(block: Dict[str, Any], shared: set) -> Iterator[Dict[str, Any]]:
    """The shared parameter values of one block as the method will see them: its plain values, then
    each value of a filtered (per-tensor) or gradient setting in turn with the plain ones."""
    plain = {k: v for k, v in block.items() if k in shared and isinstance(v, (bool, int, float, str))}
    yield plain
    for key, setting in block.items():
        if key in shared and key not in plain:
            for value in _leaf_values(setting):
                if isinstance(value, (bool, int, float, str)):
                    yield {**plain, key: value}


def check_settings(config: MergeConfiguration, method: Any, label: str) -> None:
    """Our method's settings dataclass built from every place the configuration sets shared parameters
    (over the top-level values), so that what the settings refuse (ranges, choices, combinations such
    as awd's ``scope``/``solver``/``optimizer``: ``core.awd.REFUSED_COMBINATIONS``) is refused before
    anything loads."""
    from mergekit.merge_methods.base import ParameterScope

    from mergekit_awd.errors import InvalidSettingError

    shared = {p.name for p in method.spec.parameters if p.scope == ParameterScope.SHARED}
    top = dict(config.parameters or {})
    for location, block in parameter_blocks(config):
        merged = top if location == "parameters" else {**top, **(block or {})}
        for candidate in _setting_candidates(merged, shared):
            try:
                method.settings(candidate)
            except InvalidSettingError as error:
                raise ConfigError(f"{label}: {location}: {error}", key=error.name) from None


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


def check_required_parameters(config: MergeConfiguration, method: MergeMethod, label: str) -> None:
    """Every parameter the method requires (mergekit's ``weight`` of task_arithmetic, ties…; ``t`` of
    slerp) is set for every model that needs it, in the model's own parameters or the configuration's
    (mergekit would find out while merging the first tensor).  Configurations with ``slices`` or
    ``modules`` resolve parameters per slice and are left to mergekit."""
    from mergekit.merge_methods.base import ParameterScope

    if config.slices or config.modules or not config.models:
        return
    shared = set(config.parameters or {})
    for parameter in method.spec.parameters:
        if not parameter.required or parameter.name in shared:
            continue
        if parameter.scope == ParameterScope.SHARED:
            raise ConfigError(f"{label}: merge_method {config.merge_method} needs parameter {parameter.name!r} "
                              "(set it under parameters)", key=parameter.name)
        for model in config.models:
            if parameter.scope == ParameterScope.NON_BASE and model.model == config.base_model:
                continue
            if parameter.name not in (model.parameters or {}):
                raise ConfigError(
                    f"{label}: merge_method {config.merge_method} needs parameter {parameter.name!r} for model "
                    f"{model.model} (set it in that model's parameters, or for every model under parameters)",
                    key=parameter.name)


def check_method_name(config: MergeConfiguration, label: str) -> None:
    """``merge_method`` names a registered method (mergekit only finds out after loading)."""
    from mergekit.merge_methods import registered_methods

    names = sorted(m.spec.name for m in registered_methods())
    if config.merge_method not in names:
        raise ConfigError(
            f"{label}: unknown merge_method {config.merge_method!r}; accepted: {', '.join(names)}"
        )


def check_configuration(config: MergeConfiguration, label: str, method: Optional[MergeMethod]) -> None:
    """Every check but the model files: the method name, the required parameters, and with ``method``
    given the strict parameter checks and the inputs the method needs."""
    from mergekit.merge_methods import get

    check_method_name(config, label)
    if method is not None:
        check_parameters(config, method, label)
        if hasattr(method, "settings_class"):  # this package's methods: their settings dataclass decides
            check_settings(config, method, label)
        check_inputs(config, method, label)
    check_required_parameters(config, method or get(config.merge_method), label)


def validate_merge(config: MergeConfiguration, label: str, method: Optional[MergeMethod], allow_crimes: bool,
                   options: Any = None) -> None:
    """All checks; ``method`` is given for this package's methods (strict parameter checks);
    ``options`` (mergekit's MergeOptions) adds the LoRA merge cache checks."""
    check_configuration(config, label, method)
    check_models(config, label, allow_crimes=allow_crimes, options=options)


__all__ = ["validate_merge", "check_configuration", "check_method_name", "check_parameters", "check_settings", "check_required_parameters", "check_inputs",
           "parameter_blocks"]
