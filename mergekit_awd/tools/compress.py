"""TSV-Compress (TSV-C) as PEFT LoRA adapters: ``mergekit-awd compress CONFIG OUT``.

TSV-C (Gargiulo et al., arXiv 2412.00081, "TSV-Compress") keeps, for every layer task matrix
Δ_i = θ_i − θ_base [m, n], its rank-k truncated SVD  Δ̂_i = U_k Σ_k V_kᵀ.  That is exactly a LoRA
update, so each fine-tuned model of CONFIG (the same YAML as a merge: ``base_model`` + ``models``)
becomes one PEFT adapter folder ``OUT/<model folder name>/`` (adapter_config.json +
adapter_model.safetensors) that ``peft.PeftModel.from_pretrained(base_model, folder)`` loads:

* ``nn.Linear`` weight W [out, in]:  lora_B = U_k √Σ_k [out, k],  lora_A = √Σ_k V_kᵀ [k, in];
* ``nn.Embedding`` weight E [num, dim] (PEFT computes ΔE = (B A)ᵀ):
  lora_embedding_A = √Σ_k U_kᵀ [k, num],  lora_embedding_B = V_k √Σ_k [dim, k];
* lora_alpha = r for every module (``alpha_pattern`` = ``rank_pattern``), so PEFT's scaling
  α/r is 1 and the adapter adds exactly Δ̂_i;
* rank k: ``rank`` (fixed), ``fraction`` (k = max(1, ⌊fraction · min(m, n)⌋)), or by default the
  paper's per-task budget k = max(1, ⌊min(m, n) / K⌋) for K fine-tuned models (the rank TSV-M
  keeps); k is capped at min(m, n).  Modules whose rank differs from the most common one are
  listed in ``rank_pattern`` with exact (regex-escaped) module names;
* non-matrix deltas (norms, and any module that is neither Linear nor Embedding) are stored in
  full through PEFT's ``modules_to_save`` (the module's fine-tuned parameters); a changed Linear
  bias is carried by ``lora_bias`` (lora_B's bias = the bias delta); PEFT does not support
  ``lora_bias`` on embeddings, so when it is needed the embeddings go to ``modules_to_save``;
* tensors that belong to no module of the architecture are dropped and listed in the report;
* modules whose delta is exactly zero are left out of the adapter.

adapter_config.json is written directly (PEFT's LoraConfig keys; PEFT fills the rest with its
defaults), so compressing needs no PEFT install; loading the adapters does.

Tensors are read one name at a time through mergekit's ``LoaderCache`` / ``LazyTensorLoader``; the
module types come from the architecture instantiated on the meta device (no weights).  The SVDs
use ``core.tsv.top_singular_triplets`` (``svd: exact`` or ``lowrank``).  Per adapter the report
(printed, and ``OUT/compress_report.json``) gives the parameter and byte size ratios to the
fine-tuned model and the relative reconstruction error ‖Δ − Δ̂‖_F / ‖Δ‖_F over the LoRA modules
and over all changed tensors (full copies count 0, dropped tensors count in full).
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from mergekit_awd.constants import ADAPTER_CONFIG, ADAPTER_WEIGHTS, COMPRESS_REPORT
from mergekit_awd.core.task_vectors import require_same_shape, task_vector_stack
from mergekit_awd.core.tsv import TSVSettings
from mergekit_awd.core.tsv_compress import ADAPTER_DTYPES, CompressSettings, compression_rank, lora_factors
from mergekit_awd.errors import ConfigError, TensorError
from mergekit_awd.pipeline.devices import check_device
from mergekit_awd.pipeline.input_paths import (
    InputPath,
    check_out_disjoint,
    config_file_of,
    model_reference_inputs,
    resolve,
)
from mergekit_awd.pipeline.read_errors import model_read_errors
from mergekit_awd.pipeline.staging import check_output_target, staged_output
from mergekit_awd.progress import progress_bar
from mergekit_awd.results import JsonResult


@dataclass
class ModelFamily:
    """A base model and fine-tunes, read one tensor at a time through mergekit's lazy loaders."""

    base: Any  # mergekit.common.ModelReference
    models: List[Any]
    inputs: List[InputPath] = field(default_factory=list)  # every local path read (input_paths)

    @classmethod
    def from_config(cls, config: Any) -> "ModelFamily":
        """From a merge config (path, YAML text, dict or MergeConfiguration) with base_model + models."""
        from mergekit_awd.pipeline.config import load_config
        from mergekit_awd.pipeline.model_checks import check_models

        merge_config, _, label = load_config(config)
        config_file = config_file_of(label)
        if merge_config.base_model is None:
            raise ConfigError(f"{label}: base_model is required (the model the fine-tunes started from)")
        models = [m.model for m in (merge_config.models or []) if m.model != merge_config.base_model]
        if not models:
            raise ConfigError(f"{label}: models must list at least one fine-tuned model besides base_model")
        check_models(merge_config, label)  # folders, config.json, architectures, weight files, shapes
        inputs = [item for reference in [merge_config.base_model, *models]
                  for item in model_reference_inputs(reference, "input model")]
        if config_file:
            inputs.append(InputPath("config file", config_file, resolve(config_file)))
        return cls(merge_config.base_model, models, inputs)

    def loader(self, model: Any):
        from mergekit.io.tasks import LoaderCache

        return LoaderCache().get(model)

    def tensor_names(self) -> List[str]:
        """The base model's tensor names, in file order."""
        return list(self.loader(self.base).index.tensor_paths.keys())

    def tensors(self, name: str, device: str = "cpu") -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(base tensor, [fine-tuned tensors]) for one name; a clear error when a model lacks it."""
        base = self.loader(self.base).get_tensor(name, device=device)
        out = []
        for model in self.models:
            tensor = self.loader(model).get_tensor(name, device=device, raise_on_missing=False)
            if tensor is None:
                raise TensorError(f"model {model} has no tensor {name!r} (the base model has)", tensor=name,
                                  model=str(model))
            out.append(tensor)
        require_same_shape(name, self.base, base, list(zip(self.models, out)))
        return base, out

    def folder_names(self) -> List[str]:
        """Output folder per model: the last component of its resolved path (``..``, ``.`` and
        links resolved), characters outside ``[A-Za-z0-9_.-]`` replaced by ``_``.  Two models
        that would share a folder are refused: one adapter would silently replace the other."""
        names: Dict[str, str] = {}
        for model in self.models:
            resolved = resolve(os.path.expanduser(str(model.model.path)))
            name = re.sub(r"[^\w.-]", "_", os.path.basename(resolved)).lstrip(".") or "model"
            if name in names:
                raise ConfigError(
                    f"models {names[name]!r} and {str(model.model.path)!r} would both be written to the "
                    f"adapter folder {name!r}; give the model folders different names"
                )
            names[name] = str(model.model.path)
        return list(names)


def module_kinds(base_folder: str) -> Dict[str, Tuple[str, Dict[str, Tuple[int, ...]]]]:
    """{module name: (kind, {parameter: shape})} of the architecture, built on the meta device.

    kind is "linear" (torch.nn.Linear), "embedding" (torch.nn.Embedding) or "full" (anything with
    its own parameters: norms, Conv1D, …).
    """
    import transformers

    config = transformers.AutoConfig.from_pretrained(base_folder)
    architectures = getattr(config, "architectures", None) or []
    model_class = getattr(transformers, architectures[0], None) if architectures else None
    with torch.device("meta"):
        model = model_class(config) if model_class is not None else transformers.AutoModel.from_config(config)
    kinds = {}
    for name, module in model.named_modules():
        params = {p: tuple(t.shape) for p, t in module.named_parameters(recurse=False)}
        if not params:
            continue
        kind = ("linear" if isinstance(module, torch.nn.Linear)
                else "embedding" if isinstance(module, torch.nn.Embedding) else "full")
        kinds[name] = (kind, params)
    return kinds


@dataclass(frozen=True)
class AdapterReport(JsonResult):
    """One adapter of a compress run: sizes (parameters and bytes, and their ratio to the
    fine-tuned model) and the relative reconstruction error ‖Δ − Δ̂‖_F / ‖Δ‖_F over the LoRA
    modules and over every changed tensor."""

    folder: str
    lora_modules: int
    ranks: Dict[int, int]  # rank k → number of LoRA modules with that rank
    full_modules: List[str]
    lora_bias: bool
    dropped_tensors: List[str]
    parameters: int
    bytes: int
    relative_error_lora: float
    relative_error_total: float
    model_parameters: int
    size_ratio: float
    model_bytes: int
    bytes_ratio: Optional[float]


@dataclass(frozen=True)
class CompressReport(JsonResult):
    """What ``compress_family`` wrote (also ``OUT/compress_report.json``): one entry per adapter."""

    base_model: str
    svd: str
    rank: Optional[int]
    fraction: Optional[float]
    model_parameters: int
    adapters: Dict[str, AdapterReport]


@dataclass
class AdapterBuilder:
    """Accumulates one fine-tuned model's adapter tensors and statistics."""

    name: str
    tensors: Dict[str, torch.Tensor] = field(default_factory=dict)
    ranks: Dict[str, int] = field(default_factory=dict)
    lora_kinds: Dict[str, str] = field(default_factory=dict)
    lora_stats: Dict[str, Tuple[float, float]] = field(default_factory=dict)  # (‖Δ−Δ̂‖², ‖Δ‖²)
    bias_deltas: Dict[str, torch.Tensor] = field(default_factory=dict)
    full_modules: set = field(default_factory=set)
    dropped: List[str] = field(default_factory=list)
    other_error_sq: float = 0.0  # dropped tensors count in full
    other_norm_sq: float = 0.0   # ‖Δ‖² of tensors stored exactly (full copies, biases) or dropped

    def relative_error(self, lora_only: bool) -> float:
        """‖Δ − Δ̂‖_F / ‖Δ‖_F over the LoRA modules, or over every changed tensor."""
        error = sum(e for e, _ in self.lora_stats.values())
        norm = sum(n for _, n in self.lora_stats.values())
        if not lora_only:
            error, norm = error + self.other_error_sq, norm + self.other_norm_sq
        return math.sqrt(error / norm) if norm > 0 else 0.0


def _split_name(tensor_name: str) -> Tuple[str, str]:
    module, _, param = tensor_name.rpartition(".")
    return module, param


def compress_family(
    config: Any,
    out_path: str,
    rank: Optional[int] = None,
    fraction: Optional[float] = None,
    svd: str = "exact",
    dtype: Optional[str] = None,
    device: str = "cpu",
    overwrite: bool = False,
    progress: bool = False,
) -> CompressReport:
    """Write one PEFT LoRA adapter per fine-tuned model of ``config`` into ``out_path``.

    Returns the report written to ``out_path/compress_report.json`` (see the module docstring).
    OUT may not overlap an input (``input_paths``); it is written staged, under a lock, and a
    non-empty OUT is refused unless ``overwrite``, which replaces it as a whole once all
    adapters are written (``staged_output``).  ``progress``: bars on stderr for the tensors
    (their SVDs, every model at once) and the adapters written.
    """
    CompressSettings(rank=rank, fraction=fraction, svd=svd, dtype=dtype)  # choices and ranges
    check_device(device)
    family = ModelFamily.from_config(config)
    check_out_disjoint(out_path, family.inputs, command="compress")
    final_path = check_output_target(out_path, overwrite)
    names = family.folder_names()
    with staged_output(out_path, overwrite=overwrite) as staging, model_read_errors():
        report = _compress_into(staging, final_path, family, names, rank, fraction, svd, dtype, device, progress)
    return report


def _compress_into(staging: str, final_path: str, family: "ModelFamily", names: List[str], rank: Optional[int],
                   fraction: Optional[float], svd: str, dtype: Optional[str], device: str,
                   progress: bool = False) -> CompressReport:
    """The work of ``compress_family``: adapters and report written into ``staging`` (which
    becomes ``final_path``)."""
    from safetensors.torch import save_file

    settings = TSVSettings(svd=svd)
    base_folder = os.path.expanduser(family.base.model.path)
    kinds = module_kinds(base_folder)
    builders = [AdapterBuilder(name) for name in names]
    count = len(family.models)
    model_params = 0
    save_dtype: Optional[torch.dtype] = ADAPTER_DTYPES[dtype] if dtype else None
    tensor_names = family.tensor_names()
    tensor_bar = progress_bar(len(tensor_names), f"compress · SVDs of {count} task vectors per tensor",
                              enabled=progress)
    for tensor_name in tensor_names:
        tensor_bar.update(1)
        base, models = family.tensors(tensor_name, device)
        model_params += base.numel()
        if not base.is_floating_point():
            continue
        save_dtype = save_dtype or base.dtype
        module, param = _split_name(tensor_name)
        kind = kinds.get(module, (None, {}))[0]
        task_vectors = task_vector_stack(base, models, device=torch.device(device))
        for builder, fine_tuned, delta in zip(builders, models, task_vectors):
            norm_sq = float(delta.double().pow(2).sum())
            if not math.isfinite(norm_sq):
                raise TensorError(f"{tensor_name}: model {builder.name} (or the base) has non-finite entries",
                                  tensor=tensor_name, model=builder.name)
            if norm_sq == 0.0:
                continue
            if kind is None or param not in kinds[module][1]:
                builder.dropped.append(tensor_name)
                builder.other_error_sq += norm_sq
                builder.other_norm_sq += norm_sq
            elif kind in ("linear", "embedding") and param == "weight":
                k = compression_rank(*delta.shape, count, rank, fraction)
                factors, error_sq = lora_factors(delta, k, settings, kind, save_dtype)
                for suffix, value in factors.items():
                    builder.tensors[f"{module}.{suffix}"] = value.cpu()
                builder.ranks[module] = k
                builder.lora_kinds[module] = kind
                builder.lora_stats[module] = (error_sq, norm_sq)
            elif kind == "linear" and param == "bias":
                builder.bias_deltas[module] = delta.cpu()
                builder.other_norm_sq += norm_sq
            else:
                builder.full_modules.add(module)
                builder.other_norm_sq += norm_sq
        del task_vectors
    tensor_bar.close()
    adapters: Dict[str, AdapterReport] = {}
    adapter_bar = progress_bar(len(builders), "compress · writing adapters", unit="adapters", enabled=progress)
    for index, builder in enumerate(builders):
        adapter_bar.update(1)
        folder = os.path.join(staging, builder.name)
        os.makedirs(folder)
        entry = _write_adapter(builder, family, index, kinds, folder, save_dtype or torch.float32, device,
                               base_folder, save_file)
        entry["folder"] = os.path.join(final_path, builder.name)
        entry["model_parameters"] = model_params
        entry["size_ratio"] = entry["parameters"] / model_params if model_params else 0.0
        entry["model_bytes"] = _model_bytes(os.path.expanduser(family.models[index].model.path))
        entry["bytes_ratio"] = entry["bytes"] / entry["model_bytes"] if entry["model_bytes"] else None
        adapters[builder.name] = AdapterReport(**entry)
    adapter_bar.close()
    report = CompressReport(base_model=str(family.base), svd=svd, rank=rank, fraction=fraction,
                            model_parameters=model_params, adapters=adapters)
    with open(os.path.join(staging, COMPRESS_REPORT), "w", encoding="utf-8") as handle:
        json.dump(report.to_json(), handle, indent=2)
        handle.write("\n")
    return report


def _model_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder) if f.endswith(".safetensors"))


def _write_adapter(builder: AdapterBuilder, family: ModelFamily, index: int, kinds, folder: str,
                   save_dtype: torch.dtype, device: str, base_folder: str, save_file) -> Dict[str, Any]:
    """Write adapter_config.json and adapter_model.safetensors for one model; its report entry."""
    lora_bias = bool(builder.bias_deltas)
    if lora_bias:  # PEFT has no lora_bias for embeddings: store changed embeddings in full instead
        for module, kind in list(builder.lora_kinds.items()):
            if kind == "embedding":
                for suffix in ("lora_embedding_A", "lora_embedding_B"):
                    del builder.tensors[f"{module}.{suffix}"]
                del builder.lora_kinds[module], builder.ranks[module]
                builder.other_norm_sq += builder.lora_stats.pop(module)[1]
                builder.full_modules.add(module)
        for module in builder.bias_deltas:
            if module not in builder.lora_kinds:  # bias changed, weight did not: rank-1 zero LoRA
                out_features, in_features = kinds[module][1]["weight"]
                builder.tensors[f"{module}.lora_A.weight"] = torch.zeros(1, in_features)
                builder.tensors[f"{module}.lora_B.weight"] = torch.zeros(out_features, 1)
                builder.ranks[module], builder.lora_kinds[module] = 1, "linear"
                builder.lora_stats[module] = (0.0, 0.0)
        for module in builder.lora_kinds:
            out_features = kinds[module][1]["weight"][0]
            builder.tensors[f"{module}.lora_B.bias"] = builder.bias_deltas.get(module, torch.zeros(out_features))
    # Full copies of the modules PEFT stores whole (modules_to_save): every parameter of the module
    # as fine-tuned, read again here (a module's parameters may not all have changed).
    model = family.models[index]
    for module in sorted(builder.full_modules):
        for param in kinds[module][1]:
            name = f"{module}.{param}"
            tensor = family.loader(model).get_tensor(name, device=device, raise_on_missing=False)
            if tensor is None:  # e.g. a tied head: the parameter is not stored under this name
                continue
            builder.tensors[name] = tensor.cpu()
    tensors = {f"base_model.model.{name}": value.to(save_dtype).contiguous() for name, value in builder.tensors.items()}
    ranks = builder.ranks
    common = Counter(ranks.values()).most_common(1)[0][0] if ranks else 1
    pattern = {re.escape(module): k for module, k in sorted(ranks.items()) if k != common}
    if not ranks:
        raise TensorError(
            f"{builder.name}: no Linear or Embedding weight differs from the base model; PEFT needs at "
            "least one LoRA module"
        )
    config = {
        "peft_type": "LORA",
        "task_type": None,
        "base_model_name_or_path": base_folder,
        "r": common,
        "lora_alpha": common,
        "rank_pattern": pattern,
        "alpha_pattern": dict(pattern),
        "target_modules": sorted(ranks),
        "modules_to_save": sorted(builder.full_modules) or None,
        "lora_dropout": 0.0,
        "bias": "none",
        "lora_bias": lora_bias,
        "fan_in_fan_out": False,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
    }
    with open(os.path.join(folder, ADAPTER_CONFIG), "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=2)
        handle.write("\n")
    path = os.path.join(folder, ADAPTER_WEIGHTS)
    save_file(tensors, path, metadata={"format": "pt"})
    return {
        "folder": folder,
        "lora_modules": len(ranks),
        "ranks": dict(sorted(Counter(ranks.values()).items())),
        "full_modules": sorted(builder.full_modules),
        "lora_bias": lora_bias,
        "dropped_tensors": sorted(builder.dropped),
        "parameters": sum(t.numel() for t in tensors.values()),
        "bytes": os.path.getsize(path),
        "relative_error_lora": builder.relative_error(lora_only=True),
        "relative_error_total": builder.relative_error(lora_only=False),
    }


def format_report(report: CompressReport) -> str:
    """The terminal table: one row per adapter."""
    lines = [f"{'adapter':<20} {'LoRA':>5} {'full':>5} {'params/model':>13} {'bytes/model':>12} "
             f"{'err(LoRA)':>10} {'err(all)':>10}"]
    for name, entry in report.adapters.items():
        bytes_ratio = f"{entry.bytes_ratio:.4f}" if entry.bytes_ratio is not None else "-"
        lines.append(f"{name:<20} {entry.lora_modules:>5} {len(entry.full_modules):>5} "
                     f"{entry.size_ratio:>13.4f} {bytes_ratio:>12} "
                     f"{entry.relative_error_lora:>10.4f} {entry.relative_error_total:>10.4f}")
    return "\n".join(lines)


