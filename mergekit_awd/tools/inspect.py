"""``mergekit-awd inspect CONFIG``: what AWD and TSV would see in a merge, without merging.

Plans the merge with mergekit's own planner (so models, slices, aliases and per-tensor
parameters are exactly those of the merge), then reads the models lazily, one tensor of each
model at a time (mergekit's ``LoaderCache``/``LazyTensorLoader``), and writes no model.  For
the tensors AWD would disentangle (``select``) it reports, per layer and for the whole set:

* pairwise |cos| of the task vectors τᵢ = θᵢ − θ_base, from the summed Gram matrix
  (the cosines of the concatenated task vectors);
* what AWD would do at the configured α (``core.awd_delta``): one δ per tensor (``scope: tensor``;
  mean |cos| after and ‖δ‖/mean‖τᵢ‖, averaged over tensors) and on the summed Gram matrix of the
  whole set (``scope: model``); with ``scope: row`` configured, also one δ per row of each 2-D tensor
  (the rows' mean |cos| before and after, averaged over tensors: the merge report's figures);
* TSV's Singular Task Interference (``core.tsv.singular_task_interference``) of each 2-D tensor,
  summed over tensors (the whole-model STI is the sum over layers).

``format_report`` is the terminal table; ``save_report`` writes ``inspect_report.json`` and the
heatmaps ``inspect_cosines.png`` and ``inspect_layers.png``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mergekit.common import ModelReference
from mergekit.io.tasks import GatherTensors, LoaderCache, LoadTensor
from mergekit.merge_methods.task_adapter import ExecuteMergeMethodTask
from mergekit.options import MergeOptions

from mergekit_awd.constants import INSPECT_COSINES_PNG, INSPECT_LAYERS_PNG, INSPECT_REPORT
from mergekit_awd.core.awd import SolverSettings
from mergekit_awd.core.awd_delta import TaskVectors, delta_settings, solve_delta, solve_model_scope
from mergekit_awd.core.selection import DEFAULT_SELECT, block_number, is_disentangled
from mergekit_awd.core.settings import subset
from mergekit_awd.core.task_vectors import (
    mean_offdiag,
    pairwise_abs_cos,
    require_same_shape,
    task_vector_stack,
)
from mergekit_awd.core.tsv import singular_task_interference
from mergekit_awd.errors import ConfigError
from mergekit_awd.mergekit_adapter.method import require_finite
from mergekit_awd.pipeline.config import ConfigInput, load_config
from mergekit_awd.progress import progress_bar
from mergekit_awd.pipeline.devices import check_device
from mergekit_awd.pipeline.read_errors import model_read_errors
from mergekit_awd.results import JsonResult

OUTSIDE_BLOCKS = "outside blocks"

LOG = logging.getLogger(__name__)

def layer_of(name: str) -> str:
    """The numbered block a tensor belongs to (``"3"``), or ``OUTSIDE_BLOCKS``."""
    return block_number(name) or OUTSIDE_BLOCKS


@dataclass
class GroupFigures:
    """Running totals over the selected tensors of one layer (or of the whole set)."""

    k: int
    gram: Optional[torch.Tensor] = None  # Σ G_t, float64 [K, K]
    tensors: List[str] = field(default_factory=list)
    before: List[float] = field(default_factory=list)  # per-tensor mean |cos| (solved tensors)
    after: List[float] = field(default_factory=list)
    ratios: List[float] = field(default_factory=list)
    after_matrices: List[torch.Tensor] = field(default_factory=list)
    sti: Optional[float] = None
    rows: List[Dict[str, Any]] = field(default_factory=list)  # RowSolveResult.summary() per tensor (scope: row)

    def __post_init__(self) -> None:
        if self.gram is None:
            self.gram = torch.zeros((self.k, self.k), dtype=torch.float64)

    def add(self, name: str, gram: torch.Tensor, solve: Dict[str, Any], sti: Optional[float]) -> None:
        """One tensor: its Gram matrix and its tensor-scope solve's figures (``Delta.summary``)."""
        self.gram += gram
        self.tensors.append(name)
        if solve["active"] >= 2:
            self.before.append(solve["mean_abs_cos_before"])
            self.after.append(solve["mean_abs_cos_after"])
            self.ratios.append(solve["delta_norm_ratio"])
            self.after_matrices.append(torch.tensor(solve["abs_cos_after"], dtype=torch.float64))
        if sti is not None:
            self.sti = (self.sti or 0.0) + sti

    def to_json(self) -> Dict[str, Any]:
        abs_cos = pairwise_abs_cos(self.gram)
        mean = (lambda values: sum(values) / len(values) if values else None)
        after_matrix = torch.stack(self.after_matrices).mean(0).tolist() if self.after_matrices else None
        solved_rows = [r for r in self.rows if r["solved_rows"]]
        row_scope = {
            "solved_tensors": len(solved_rows),
            **{key: mean([r[key] for r in solved_rows])
               for key in ("mean_abs_cos_before", "mean_abs_cos_after", "delta_norm_ratio")},
        } if self.rows else None
        return {
            "row_scope": row_scope,
            "tensors": len(self.tensors),
            "abs_cos": abs_cos.tolist(),
            "mean_abs_cos": mean_offdiag(abs_cos),
            "tensor_scope": {
                "solved_tensors": len(self.after),
                "mean_abs_cos_before": mean(self.before),
                "mean_abs_cos_after": mean(self.after),
                "delta_norm_ratio": mean(self.ratios),
                "abs_cos_after": after_matrix,
            },
            "sti": self.sti,
        }


@dataclass(frozen=True)
class InspectReport(JsonResult):
    """What ``inspect`` found (written as ``inspect_report.json``).

    settings: the AWD solver settings inspected with, ``select`` and ``scope``;
    whole:    the figures of all selected tensors (``GroupFigures.to_json`` plus ``model_scope``:
              one δ over them); layers: the same per numbered block; tensors: per tensor (|cos|,
              selected, and after AWD); skipped: tensors not inspected → why.
    """

    merge_method: str
    base_model: str
    models: List[str]
    labels: List[str]
    settings: Dict[str, Any]
    whole: Dict[str, Any]
    layers: Dict[str, Dict[str, Any]]
    tensors: Dict[str, Dict[str, Any]]
    skipped: Dict[str, str]


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor of the merge: its name, inputs and parameters."""

    name: str
    vocabulary_axis: Optional[int]
    inputs: Dict[ModelReference, Any]  # model → WeightInfo
    parameters: Dict[str, Any]
    dtype: Optional[str] = None  # the merge's dtype: inputs are cast to it before the method sees them


def plan_tensors(config: ConfigInput, options: MergeOptions
                 ) -> Tuple[List[PlannedTensor], ModelReference, List[ModelReference], str, Dict[str, str]]:
    """Plan the merge with the merge's own planner (``AWDMergePlanner``, without the model-scope
    rewrite: inspect reads every tensor itself); no tensor is read.

    Returns (tensors, base model, non-base models in order, merge method, skipped tensors → reason).
    """
    from mergekit.architecture import get_architecture_info
    from mergekit.merge import _model_out_config

    from mergekit_awd.mergekit_adapter.planner import AWDMergePlanner
    from mergekit_awd.mergekit_adapter.registration import method_for, register_methods
    from mergekit_awd.pipeline.validation import validate_merge

    register_methods()
    merge_config, _source, label = load_config(config)
    base = merge_config.base_model
    if base is None:
        raise ConfigError(f"{label}: inspect needs a base_model (task vectors are θᵢ − θ_base)")
    validate_merge(merge_config, label, method_for(merge_config.merge_method), allow_crimes=options.allow_crimes,
                   options=options)
    arch_info = get_architecture_info(merge_config, options)
    LoaderCache().setup(options=options)
    out_config = _model_out_config(merge_config, arch_info, trust_remote_code=options.trust_remote_code)
    planner = AWDMergePlanner(merge_config.model_copy(deep=True), arch_info, options=options,
                              out_model_config=out_config)
    planner.rewrite_model_scopes = False
    planner._plan()
    tensors: List[PlannedTensor] = []
    skipped: Dict[str, str] = {}
    order: Optional[List[ModelReference]] = None
    for weight, task in planner._tensors:
        if not isinstance(task, ExecuteMergeMethodTask):
            skipped[weight.name] = "not merged by the merge method"
            continue
        if type(task.gather_tensors) is not GatherTensors:
            skipped[weight.name] = "vocabulary re-mapped by a tokenizer setting"
            continue
        models = [m for m in task.model_order if m != task.base_model]
        if order is None:
            order = models
        elif set(models) != set(order):
            raise ConfigError(
                f"{label}: {weight.name} merges {[str(m) for m in models]} but earlier tensors merge "
                f"{[str(m) for m in order]}; inspect needs the same models for every tensor"
            )
        tensors.append(PlannedTensor(weight.name, weight.vocabulary_axis,
                                     dict(task.gather_tensors.weight_info.items()), dict(task.parameters.items()),
                                     task.gather_tensors.dtype))
    if not tensors or order is None:
        raise ConfigError(f"{label}: the merge plans no tensor to inspect")
    return tensors, base, order, merge_config.merge_method, skipped


def _settings(method: str, parameters: Dict[str, Any]) -> SolverSettings:
    """The AWD solver settings the configuration sets (a method whose settings include them: ``awd``,
    ``tsv`` with ``disentangle``); the solver's defaults otherwise (mergekit's methods, the others)."""
    from mergekit_awd.mergekit_adapter.registration import method_for

    ours = method_for(method)
    if ours is None or not issubclass(ours.settings_class, SolverSettings):
        return SolverSettings()
    return subset(SolverSettings, ours.settings(parameters))


def _load(model: ModelReference, weight: Any, device: str, dtype: Optional[str]) -> Optional[torch.Tensor]:
    """The tensor exactly as the merge's ``GatherTensors`` hands it to the method: mergekit's own
    ``LoadTensor`` (names, aliases, tied names, checkpoint conversion, the cast to the merge's
    ``dtype``), so inspect and the merge report the same figures for a bfloat16 config."""
    return LoadTensor(model=model, tensor=weight.name, dtype=weight.force_dtype or dtype, device=device,
                      optional=weight.optional, aliases=weight.aliases, tied_names=weight.tied_names).execute()


@model_read_errors()
def inspect_merge(config: ConfigInput, options: Optional[MergeOptions] = None, device: str = "cpu",
                  tsv: bool = True, progress: bool = False) -> "InspectReport":
    """Inspect the merge in ``config`` (a path, YAML text, dict or MergeConfiguration).

    Returns an ``InspectReport`` (see the module docstring and ``save_report``).  ``tsv=False``
    skips the STI (it needs an SVD of every task matrix).  ``progress``: a bar over the tensors
    on stderr.
    """
    from mergekit_awd.presentation.card import model_labels

    options = options or MergeOptions()
    check_device(device)
    planned, base, order, method, skipped = plan_tensors(config, options)
    k = len(order)
    whole = GroupFigures(k)
    layers: Dict[str, GroupFigures] = {}
    per_tensor: Dict[str, Dict[str, Any]] = {}
    settings_used: Optional[SolverSettings] = None
    select_used = DEFAULT_SELECT
    bar = progress_bar(len(planned), "inspect · reading tensors" + (" and their SVDs" if tsv else ""),
                       enabled=progress)
    for tensor in planned:
        bar.update(1)
        base_tensor = _load(base, tensor.inputs[base], device, tensor.dtype)
        models = [_load(m, tensor.inputs[m], device, tensor.dtype) for m in order]
        if base_tensor is None or any(t is None for t in models):
            skipped[tensor.name] = "optional tensor missing in some model"
            continue
        if not base_tensor.is_floating_point():
            skipped[tensor.name] = "not floating point"
            continue
        require_finite(tensor.name, [(f"{base} (base model)", base_tensor), *((str(m), v) for m, v in zip(order, models))],
                       opt_out=False)
        require_same_shape(tensor.name, base, base_tensor, list(zip(order, models)))
        task_vectors = task_vector_stack(base_tensor, models, device=torch.device(device))
        del models, base_tensor
        vectors = TaskVectors.from_stack(task_vectors)
        gram = vectors.gram()
        abs_cos = pairwise_abs_cos(gram)
        select = tensor.parameters.get("select", DEFAULT_SELECT)
        selected = is_disentangled(tensor.name, task_vectors.ndim - 1, select, tensor.vocabulary_axis)
        entry: Dict[str, Any] = {"layer": layer_of(tensor.name), "selected": selected,
                                 "shape": list(task_vectors.shape[1:]), "abs_cos": abs_cos.tolist(),
                                 "mean_abs_cos": mean_offdiag(abs_cos)}
        if selected:
            settings = _settings(method, tensor.parameters)
            settings_used, select_used = settings_used or settings, select
            solve = solve_delta(vectors, delta_settings(settings, "tensor")).summary
            sti = singular_task_interference(list(task_vectors)) if tsv and task_vectors.ndim == 3 else None
            entry.update(mean_abs_cos_after=solve["mean_abs_cos_after"], delta_norm_ratio=solve["delta_norm_ratio"],
                         active=solve["active"], sti=sti)
            whole.add(tensor.name, gram, solve, sti)
            layers.setdefault(entry["layer"], GroupFigures(k)).add(tensor.name, gram, solve, sti)
            if tensor.parameters.get("scope") == "row" and task_vectors.ndim == 3:
                entry["row_scope"] = solve_delta(vectors, delta_settings(settings, "row")).summary
                whole.rows.append(entry["row_scope"])
                layers[entry["layer"]].rows.append(entry["row_scope"])
        per_tensor[tensor.name] = entry
        del task_vectors
    settings_used = settings_used or _settings(method, planned[0].parameters)
    model_solve = solve_model_scope({"all selected": whole.gram}, k, settings_used).summary
    whole_json = whole.to_json()
    whole_json["model_scope"] = {key: model_solve[key] for key in (
        "mean_abs_cos_before", "mean_abs_cos_after", "delta_norm_ratio", "abs_cos_after", "coefficients")}
    layer_order = sorted(layers, key=lambda name: (name == OUTSIDE_BLOCKS, int(name) if name.isdigit() else 0))
    bar.close()
    return InspectReport(
        merge_method=method,
        base_model=str(base),
        models=[str(m) for m in order],
        labels=model_labels(order),
        settings={**asdict(settings_used), "select": select_used, "scope": planned[0].parameters.get("scope"),
                  "combine": planned[0].parameters.get("combine")},
        whole=whole_json,
        layers={name: layers[name].to_json() for name in layer_order},
        tensors=per_tensor,
        skipped=skipped,
    )


# --------------------------------------------------------------------------- output


def _number(value: Optional[float], width: int, digits: int = 4) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"


def format_report(result: InspectReport) -> str:
    """The terminal table: one row per layer, the whole set, and the pairwise matrix."""
    report = result.to_json()
    settings = report["settings"]
    labels = report["labels"]
    lines = [
        f"{len(labels)} task vectors against {report['base_model']} ({report['merge_method']} config; "
        f"AWD at alpha={settings['alpha']}, select={settings['select']}, solver {settings['optimizer']} "
        f"{settings['steps']} steps, {settings['units']} units)",
        "",
        f"{'layer':<16}{'tensors':>8}{'|cos| concat':>14}{'|cos| tensor':>14}{'AWD after':>11}"
        f"{'|δ|/|τ|':>9}{'TSV STI':>12}",
    ]

    def row(name: str, group: Dict[str, Any]) -> str:
        scope = group["tensor_scope"]
        return (f"{name:<16}{group['tensors']:>8}{_number(group['mean_abs_cos'], 14)}"
                f"{_number(scope['mean_abs_cos_before'], 14)}{_number(scope['mean_abs_cos_after'], 11)}"
                f"{_number(scope['delta_norm_ratio'], 9, 3)}{_number(group['sti'], 12, 4)}")

    for name, group in report["layers"].items():
        lines.append(row(name if name == OUTSIDE_BLOCKS else f"layer {name}", group))
    whole = report["whole"]
    model = whole["model_scope"]
    lines += [
        row("all selected", whole),
        "",
        "|cos| concat: cosines of the concatenated task vectors; |cos| tensor / AWD after / |δ|/|τ|: "
        "per tensor (scope: tensor), mean over tensors; TSV STI: sum over tensors (weight units).",
        f"One δ over all selected tensors (scope: model): mean |cos| {model['mean_abs_cos_before']:.4f} -> "
        f"{model['mean_abs_cos_after']:.4f}, |δ|/mean|τ| = {model['delta_norm_ratio']:.4f}"
        + (f"  (configured scope: {settings['scope']})" if settings.get("scope") else "")
        + (f"; then combine: {settings['combine']}" if settings.get("combine") else ""),
        *_row_scope_lines(whole.get("row_scope")),
        "",
        "Pairwise |cos| over all selected tensors, concatenated (before -> after one model-wide δ):",
    ]
    width = max(16, max(len(label) for label in labels) + 2)
    lines.append(" " * width + "".join(f"{label:>{width}}" for label in labels))
    for i, label in enumerate(labels):
        cells = "".join(
            "".rjust(width) if i == j else
            f"{whole['abs_cos'][i][j]:.3f} -> {model['abs_cos_after'][i][j]:.3f}".rjust(width)
            for j in range(len(labels))
        )
        lines.append(f"{label:<{width}}{cells}")
    if report["skipped"]:
        lines += ["", f"Skipped {len(report['skipped'])} tensors (see {INSPECT_REPORT})."]
    return "\n".join(lines)


def _row_scope_lines(rows: Optional[Dict[str, Any]]) -> List[str]:
    if not rows or rows["mean_abs_cos_before"] is None:
        return []
    return [f"One δ per output row (scope: row), {rows['solved_tensors']} 2-D tensors: mean row |cos| "
            f"{rows['mean_abs_cos_before']:.4f} -> {rows['mean_abs_cos_after']:.4f}, "
            f"Σ|δ[r]|/Σ mean|τ[r]| = {rows['delta_norm_ratio']:.4f} (means over tensors)"]


def _pair_labels(labels: Sequence[str]) -> Tuple[List[Tuple[int, int]], List[str]]:
    pairs = [(i, j) for i in range(len(labels)) for j in range(i + 1, len(labels))]
    return pairs, [f"{labels[i]} · {labels[j]}" for i, j in pairs]


def save_report(report: InspectReport, out_dir: str) -> List[str]:
    """Write the JSON and, when matplotlib is installed, the two heatmaps; return the paths."""
    os.makedirs(out_dir, exist_ok=True)
    json_path = os.path.join(out_dir, INSPECT_REPORT)
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(report.to_json(), handle, indent=2)
        handle.write("\n")
    try:
        return [json_path, *save_heatmap_pngs(report, out_dir)]
    except ImportError:
        LOG.warning("matplotlib is not installed: wrote %s without heatmaps", json_path)
        return [json_path]


def save_heatmap_pngs(result: InspectReport, out_dir: str) -> List[str]:
    """``INSPECT_COSINES_PNG`` (whole set before/after) and ``INSPECT_LAYERS_PNG`` (layers × model pairs)."""
    from mergekit_awd.presentation.heatmap import HeatmapPanel, save_heatmaps

    report = result.to_json()
    labels = report["labels"]
    whole = report["whole"]
    panels = [
        HeatmapPanel("before: all selected tensors", torch.tensor(whole["abs_cos"]), labels, labels),
        HeatmapPanel("after one δ (scope: model)", torch.tensor(whole["model_scope"]["abs_cos_after"]),
                     labels, labels),
    ]
    if whole["tensor_scope"]["abs_cos_after"] is not None:
        panels.append(HeatmapPanel("after δ per tensor (mean)", torch.tensor(whole["tensor_scope"]["abs_cos_after"]),
                                   labels, labels))
    cosines = save_heatmaps(os.path.join(out_dir, INSPECT_COSINES_PNG), panels, "Task-vector |cos| and AWD")
    pairs, pair_names = _pair_labels(labels)
    layer_names = [n if n == OUTSIDE_BLOCKS else f"layer {n}" for n in report["layers"]]
    groups = list(report["layers"].values())
    before = torch.tensor([[g["abs_cos"][i][j] for i, j in pairs] for g in groups])
    layer_panels = [HeatmapPanel("before", before, layer_names, pair_names)]
    if all(g["tensor_scope"]["abs_cos_after"] is not None for g in groups):
        after = torch.tensor([[g["tensor_scope"]["abs_cos_after"][i][j] for i, j in pairs] for g in groups])
        layer_panels.append(HeatmapPanel("after δ per tensor (mean)", after, layer_names, pair_names))
    layers = save_heatmaps(os.path.join(out_dir, INSPECT_LAYERS_PNG), layer_panels, "Per-layer |cos| between task vectors")
    return [cosines, layers]


