"""Checks a merge configuration before any heavy work or any output.

mergekit ignores unknown parameter names, validates values only while planning tensor by tensor,
and finds shape mismatches only when it reaches the tensor.  These checks run first and raise one
``ConfigError`` that names the file, the key or model, and what would be accepted.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from mergekit.config import ConditionalParameter, MergeConfiguration
from mergekit.merge_methods.base import MergeMethod
from pydantic import ValidationError

from mergekit_awd.hub.ids import is_hub_id
from mergekit_awd.pipeline.config import ConfigError


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


def _local_folder(path: str, noun: str, folder_noun: str) -> Optional[str]:
    expanded = os.path.expanduser(path)
    if os.path.isdir(expanded):
        return expanded
    if os.path.exists(expanded):
        raise ConfigError(f"{noun} {path!r} is a file, not a {folder_noun} folder")
    if is_hub_id(path):
        return None
    raise ConfigError(f"{folder_noun} folder {path!r} does not exist")


def local_model_dir(reference) -> Optional[str]:
    """The local folder of a model reference, None for a Hub id; error for a missing local path."""
    return _local_folder(reference.model.path, "model", "model")


def local_lora_dir(reference) -> Optional[str]:
    """The local LoRA adapter folder of a ``model+lora`` reference, None for a Hub id (or no LoRA)."""
    if reference.lora is None:
        return None
    return _local_folder(reference.lora.path, "LoRA adapter", "LoRA adapter")


def safetensors_shapes(folder: str) -> Optional[Dict[str, Tuple[int, ...]]]:
    """Tensor shapes from the safetensors headers of a model folder (no data is read); None for
    pickled (.bin) weights.  ModelFileError for a damaged index or header."""
    from mergekit_awd.pipeline import model_files

    files = model_files.weight_files(folder)
    return model_files.safetensors_shapes(files) if files.format == "safetensors" else None


def _architectures(folder: str) -> List[str]:
    """``architectures`` of the folder's config.json ([] when absent); ModelFileError when unreadable."""
    from mergekit_awd.pipeline import model_files

    return model_files.read_architectures(folder)


def _known_architecture(name: str, model_config: Dict[str, Any]) -> bool:
    """mergekit has a definition for ``name``, or can infer one (transformers has the model class,
    or the model brings its own code through ``auto_map``)."""
    import transformers
    from mergekit.architecture.json_definitions import NAME_TO_ARCH
    from mergekit.architecture.moe_defs import AfmoeModuleArchitecture, Glm4MoeModuleArchitecture
    from mergekit.common import ARCH_NAME_TO_AUTO_CLS

    if name in NAME_TO_ARCH or name in ARCH_NAME_TO_AUTO_CLS:
        return True
    if name in (AfmoeModuleArchitecture.ARCHITECTURE_NAME, Glm4MoeModuleArchitecture.ARCHITECTURE_NAME):
        return True
    if isinstance(model_config.get("auto_map"), dict):
        return True
    try:
        model_class = getattr(transformers, name, None)
    except Exception:  # noqa: BLE001 - a lazy import that fails: transformers cannot build it either
        model_class = None
    return isinstance(model_class, type) and issubclass(model_class, transformers.PreTrainedModel)


def _check_architecture(label: str, role: str, folder: str, names: List[str], model_config: Dict[str, Any]) -> None:
    """What ``mergekit.architecture.arch_info_for_config`` needs: exactly one architecture name,
    and one it has a definition for or can infer (else it fails or guesses AutoModelForCausalLM)."""
    where = f"{label}: {role} {folder}: config.json"
    if len(names) != 1:
        found = "missing" if not names else f"{names!r}"
        raise ConfigError(f"{where} \"architectures\" is {found}; mergekit needs exactly one model class name "
                          "there (e.g. [\"LlamaForCausalLM\"])")
    if not _known_architecture(names[0], model_config):
        raise ConfigError(
            f"{where} \"architectures\" is {names!r}: {names[0]!r} is not a model architecture mergekit or "
            "transformers knows (Auto… names are loader classes, not architectures); name the model class, "
            "e.g. [\"LlamaForCausalLM\"]"
        )


def _vocabulary_axes(folder: str, override: Optional[str]) -> Optional[Dict[str, int]]:
    """tensor name → vocabulary axis from mergekit's architecture definition of the model in
    ``folder`` (the tensors its tokenizer step re-maps); None when mergekit has no definition."""
    try:
        from mergekit.architecture import arch_info_for_config
        from transformers import AutoConfig

        model_config = AutoConfig.from_pretrained(folder)
        if override:
            model_config.architectures = [override]
        info = arch_info_for_config(model_config)
        if info is None:
            return None
        axes: Dict[str, int] = {}
        for weight in info.all_weights(model_config):
            if weight.vocabulary_axis is not None:
                for name in (weight.name, *(weight.aliases or ()), *(weight.tied_names or ())):
                    axes[name] = weight.vocabulary_axis
        return axes
    except Exception:  # noqa: BLE001 - no definition to go by: the caller falls back to vocab_size
        return None


def _vocab_size(model_config: Dict[str, Any]) -> Optional[int]:
    value = model_config.get("vocab_size")
    if value is None and isinstance(model_config.get("text_config"), dict):
        value = model_config["text_config"].get("vocab_size")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _differs_only_on(shape: Tuple[int, ...], other: Tuple[int, ...], axis: int) -> bool:
    return (len(shape) == len(other) and axis < len(shape)
            and all(a == b for i, (a, b) in enumerate(zip(shape, other)) if i != axis))


def _checked(label: str, check, path: str):
    from mergekit_awd.errors import ModelFileError

    try:
        return check(path)
    except ModelFileError as error:
        raise ModelFileError(f"{label}: {error}", path=error.path) from None


def check_models(config: MergeConfiguration, label: str, allow_crimes: bool = False, options: Any = None) -> None:
    """Every local model folder and LoRA adapter folder is readable (``model_files``: config.json,
    weight index, safetensors headers, pickled weights through torch's weights_only loader), names
    one architecture mergekit can merge, shares the base's architecture and matches its tensor
    shapes.  Only metadata is read.  ``ConfigError`` for the configuration, ``ModelFileError`` for
    a damaged file (each names the file).

    Tensors on a vocabulary axis may differ in that axis when mergekit re-maps vocabularies
    (``tokenizer_source`` / ``tokenizer``, or ``options.unsafe_truncate_embeddings``).  With
    ``options`` (mergekit's MergeOptions): its ``allow_crimes`` counts too, a LoRA needs
    ``lora_merge_cache``, and an unusable entry left in that cache is refused.
    """
    from mergekit_awd.errors import ModelFileError
    from mergekit_awd.pipeline import model_files

    if options is not None:
        allow_crimes = allow_crimes or bool(options.allow_crimes)
    base = config.base_model
    models = config.referenced_models()
    folders: Dict[Any, Optional[str]] = {}
    loras: Dict[Any, Optional[str]] = {}
    for reference in models:
        try:
            folders[reference] = local_model_dir(reference)
            if reference.lora is not None:
                loras[reference] = local_lora_dir(reference)
        except ConfigError as error:
            raise ConfigError(f"{label}: {error}") from None
    if loras and options is not None and not options.lora_merge_cache:
        raise ConfigError(f"{label}: model {next(iter(loras))} has a LoRA adapter; merging it needs "
                          "--lora-merge-cache DIR (MergeOptions.lora_merge_cache)")

    # config.json and the architecture of every local model, before any weight file is opened
    configs: Dict[str, Dict[str, Any]] = {}
    archs: Dict[Any, List[str]] = {}
    for reference, folder in folders.items():
        if folder is None:
            continue
        if folder not in configs:
            configs[folder] = _checked(label, model_files.read_config_json, folder)
        names = _checked(label, lambda f: model_files.read_architectures(f, configs[f]), folder)
        if reference.override_architecture:
            names = [reference.override_architecture]
        _check_architecture(label, "base_model" if reference == base else "model", folder, names, configs[folder])
        archs[reference] = names

    # the weight files (headers and pickle structure only), then the LoRA adapters
    found: Dict[str, Any] = {}
    for folder in configs:
        found[folder] = _checked(label, model_files.check_model_folder, folder)
    for reference, lora in loras.items():
        if lora is not None:
            _checked(label, model_files.check_lora_folder, lora)
        if options is not None and options.lora_merge_cache:
            entry = os.path.join(options.lora_merge_cache,
                                 reference.model._unique_id() + "_" + reference.lora._unique_id())
            if os.path.isdir(entry):  # mergekit reuses any folder it finds there
                try:
                    model_files.check_model_folder(entry)
                except ModelFileError as error:
                    raise ModelFileError(
                        f"{label}: the LoRA merge cache holds an unusable merge of {reference} ({error}); it is left "
                        f"from a merge that did not finish: delete {entry}", path=error.path) from None

    if base is None or folders.get(base) is None:
        return
    base_dir = folders[base]
    base_arch = archs[base]
    base_shapes = found[base_dir].shapes
    tokenizer = config.tokenizer.source if config.tokenizer is not None else config.tokenizer_source
    vocab_remapped = tokenizer is not None or bool(options is not None and options.unsafe_truncate_embeddings)
    axes: Optional[Dict[str, int]] = None
    axes_known = False
    for reference, folder in folders.items():
        if reference == base or folder is None or reference.lora is not None:
            continue
        arch = archs[reference]
        if not allow_crimes and arch and base_arch and arch != base_arch:
            raise ConfigError(
                f"{label}: model {reference} is {arch} but base_model {base} is {base_arch} "
                "(mixing architectures needs --allow-crimes)"
            )
        shapes = found[folder].shapes
        if base_shapes is None or shapes is None:
            continue
        for name, shape in base_shapes.items():
            other = shapes.get(name)
            if other is None or other == shape:
                continue
            if not axes_known:
                axes, axes_known = _vocabulary_axes(base_dir, base.override_architecture), True
            if axes is not None:
                axis = axes.get(name)
            else:  # no definition: a tensor whose first axis is each model's vocab_size
                sizes = (_vocab_size(configs[base_dir]), _vocab_size(configs[folder]))
                axis = 0 if None not in sizes and (shape[:1], other[:1]) == ((sizes[0],), (sizes[1],)) else None
            vocabulary = axis is not None and _differs_only_on(shape, other, axis)
            if vocabulary and vocab_remapped:
                continue  # mergekit's tokenizer step re-maps this axis to the output vocabulary
            hint = (" (a different vocabulary: set tokenizer_source, e.g. union or base, to merge it)"
                    if vocabulary else "")
            raise ConfigError(
                f"{label}: tensor {name} has shape {list(other)} in {reference} but "
                f"{list(shape)} in base_model {base}{hint}"
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
        check_inputs(config, method, label)
    check_required_parameters(config, method or get(config.merge_method), label)


def validate_merge(config: MergeConfiguration, label: str, method: Optional[MergeMethod], allow_crimes: bool,
                   options: Any = None) -> None:
    """All checks; ``method`` is given for this package's methods (strict parameter checks);
    ``options`` (mergekit's MergeOptions) adds the LoRA merge cache checks."""
    check_configuration(config, label, method)
    check_models(config, label, allow_crimes=allow_crimes, options=options)


__all__ = ["validate_merge", "check_configuration", "check_method_name", "check_parameters", "check_required_parameters", "check_inputs",
           "check_models", "parameter_blocks"]
