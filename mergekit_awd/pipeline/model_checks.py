"""Checks of the model folders a configuration names, before anything is loaded: readable files,
one mergekit architecture shared with the base, the base's tensor shapes (metadata only)."""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Tuple

from mergekit.config import MergeConfiguration

from mergekit_awd.hub_ids import is_hub_id
from mergekit_awd.pipeline.config import ConfigError


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


def vocabulary_axes(folder: str, override: Optional[str]) -> Optional[Dict[str, int]]:
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


def vocabulary_axis_rule(folder: str, override: Optional[str]) -> Callable[[str, Tuple[int, ...]], Optional[int]]:
    """tensor name, shape → its vocabulary axis in the model of ``folder``: mergekit's architecture
    definition (``vocabulary_axes``), else a first axis of the model's ``vocab_size`` (``_VocabularyAxes``'s
    rule for a family of one vocabulary)."""
    from mergekit_awd.errors import ModelFileError
    from mergekit_awd.pipeline import model_files

    axes = vocabulary_axes(folder, override)
    if axes is not None:
        return lambda name, shape: axes.get(name)
    try:
        size = _vocab_size(model_files.read_config_json(folder))
    except ModelFileError:
        size = None
    return lambda name, shape: 0 if size is not None and shape[:1] == (size,) else None


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
    if options is not None:
        allow_crimes = allow_crimes or bool(options.allow_crimes)
    folders, loras = _local_folders(config, label, options)
    configs, archs = _architectures_of(config, label, folders)
    found = _check_weight_files(label, configs, loras, options)
    base = config.base_model
    if base is None or folders.get(base) is None:
        return
    tokenizer = config.tokenizer.source if config.tokenizer is not None else config.tokenizer_source
    vocab_remapped = tokenizer is not None or bool(options is not None and options.unsafe_truncate_embeddings)
    vocabulary = _VocabularyAxes(folders[base], base.override_architecture, configs)
    for reference, folder in folders.items():
        if reference == base or folder is None or reference.lora is not None:
            continue
        arch = archs[reference]
        if not allow_crimes and arch and archs[base] and arch != archs[base]:
            raise ConfigError(
                f"{label}: model {reference} is {arch} but base_model {base} is {archs[base]} "
                "(mixing architectures needs --allow-crimes)"
            )
        _check_shapes(label, base, found[folders[base]].shapes, reference, folder, found[folder].shapes,
                      vocabulary, vocab_remapped)


def _local_folders(config: MergeConfiguration, label: str, options: Any
                   ) -> Tuple[Dict[Any, Optional[str]], Dict[Any, Optional[str]]]:
    """The local folder of every model and of every LoRA adapter (None: a Hub id)."""
    folders: Dict[Any, Optional[str]] = {}
    loras: Dict[Any, Optional[str]] = {}
    for reference in config.referenced_models():
        try:
            folders[reference] = local_model_dir(reference)
            if reference.lora is not None:
                loras[reference] = local_lora_dir(reference)
        except ConfigError as error:
            raise ConfigError(f"{label}: {error}") from None
    if loras and options is not None and not options.lora_merge_cache:
        raise ConfigError(f"{label}: model {next(iter(loras))} has a LoRA adapter; merging it needs "
                          "--lora-merge-cache DIR (MergeOptions.lora_merge_cache)")
    return folders, loras


def _architectures_of(config: MergeConfiguration, label: str, folders: Dict[Any, Optional[str]]
                      ) -> Tuple[Dict[str, Dict[str, Any]], Dict[Any, List[str]]]:
    """config.json of every local folder and the architecture of every local model, before any
    weight file is opened."""
    from mergekit_awd.pipeline import model_files

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
        role = "base_model" if reference == config.base_model else "model"
        _check_architecture(label, role, folder, names, configs[folder])
        archs[reference] = names
    return configs, archs


def _check_weight_files(label: str, configs: Dict[str, Dict[str, Any]], loras: Dict[Any, Optional[str]],
                        options: Any) -> Dict[str, Any]:
    """The weight files of every local folder (headers and pickle structure only), then the LoRA
    adapters and any entry of theirs left in the LoRA merge cache; what each folder holds."""
    from mergekit_awd.errors import ModelFileError
    from mergekit_awd.pipeline import model_files

    found = {folder: _checked(label, model_files.check_model_folder, folder) for folder in configs}
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
    return found


class _VocabularyAxes:
    """Which axis of a tensor is the vocabulary, read from the base's architecture once, when first
    needed (no definition: a tensor whose first axis is each model's ``vocab_size``)."""

    def __init__(self, base_dir: str, override: Optional[str], configs: Dict[str, Dict[str, Any]]) -> None:
        self.base_dir, self.override, self.configs = base_dir, override, configs
        self._axes: Optional[Dict[str, int]] = None
        self._known = False

    def axis(self, name: str, shape: Tuple[int, ...], other: Tuple[int, ...], folder: str) -> Optional[int]:
        if not self._known:
            self._axes, self._known = vocabulary_axes(self.base_dir, self.override), True
        if self._axes is not None:
            return self._axes.get(name)
        sizes = (_vocab_size(self.configs[self.base_dir]), _vocab_size(self.configs[folder]))
        return 0 if None not in sizes and (shape[:1], other[:1]) == ((sizes[0],), (sizes[1],)) else None


def _check_shapes(label: str, base: Any, base_shapes: Optional[Dict[str, Tuple[int, ...]]], reference: Any,
                  folder: str, shapes: Optional[Dict[str, Tuple[int, ...]]], vocabulary: _VocabularyAxes,
                  vocab_remapped: bool) -> None:
    """Every tensor of the base has its shape in ``reference``, or differs only on the vocabulary
    axis where mergekit re-maps vocabularies."""
    if base_shapes is None or shapes is None:
        return
    for name, shape in base_shapes.items():
        other = shapes.get(name)
        if other is None or other == shape:
            continue
        axis = vocabulary.axis(name, shape, other, folder)
        on_vocabulary = axis is not None and _differs_only_on(shape, other, axis)
        if on_vocabulary and vocab_remapped:
            continue  # mergekit's tokenizer step re-maps this axis to the output vocabulary
        hint = (" (a different vocabulary: set tokenizer_source, e.g. union or base, to merge it)"
                if on_vocabulary else "")
        raise ConfigError(
            f"{label}: tensor {name} has shape {list(other)} in {reference} but "
            f"{list(shape)} in base_model {base}{hint}"
        )


__all__ = ["check_models", "local_model_dir", "local_lora_dir", "vocabulary_axes", "vocabulary_axis_rule"]
