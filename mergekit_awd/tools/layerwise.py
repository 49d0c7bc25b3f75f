"""Layer-wise tuning (issue #29, the library part): the per-task parts D_i of a merge configuration and
Adam on the coefficients Λ of θ(Λ) = θ_base + Σ_i Σ_g λ_{i,g} D_i^g (``core.layerwise``).

``per_task_parts`` reads the base and the fine-tunes tensor by tensor with mergekit's loaders and forms
D_i once: τ_i for ``task_arithmetic``; for ``awd`` (``combine: task_arithmetic``, any scope and solver)
τ_i − δ where AWD disentangles (δ from ``core.awd_delta``, the merge's own entry) and τ_i elsewhere —
AWD AdaMerging; for ``tsv`` task i's block of TSV-M on its task matrices (``core.tsv.tsv_task_parts``,
after AWD's δ with ``disentangle``) and τ_i / K on the averaged tensors.  The tensors a method treats
are chosen as its merge chooses them (``select`` and the vocabulary axis of mergekit's architecture
definition).  Other methods have no such per-task parts and are refused with one line (TIES: the
elected signs and the normalisation depend on the weights; DARE/DELLA: random masks).

``learn_coefficients`` minimises the objective (``tools.layerwise_objective``) on the training lines
with Adam from Λ⁰ (``LAYERWISE_FORMS``: 0.3, the AWD paper's initialisation; tsv 1, its α), projected
on the method's least coefficient (tsv: positive weights), evaluates it on the held-out lines every
``eval_every`` steps and keeps the Λ with the best held-out value (early stopping); with a checkpoint
file, a killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mergekit_awd.core.awd import AWDParameters
from mergekit_awd.core.awd_delta import (
    Delta, ScopeDelta, TaskVectors, disentangle, remove_redundant_vector, solve_delta, solve_model_scope,
)
from mergekit_awd.core.layerwise import (
    INITIAL_COEFFICIENT, Grouping, initial_coefficients, merged_state, ordered_groups, tensor_group,
)
from mergekit_awd.core.selection import is_disentangled, is_task_matrix
from mergekit_awd.core.settings import from_parameters
from mergekit_awd.core.tsv import TSVParameters, tsv_task_parts
from mergekit_awd.errors import ConfigError, EvaluationDataError
from mergekit_awd.mergekit_adapter.layerwise_config import LAYERWISE_FORMS, LAYERWISE_METHODS
from mergekit_awd.pipeline.model_checks import vocabulary_axis_rule
from mergekit_awd.progress import progress_bar
from mergekit_awd.tools.layerwise_objective import Example, Objective, objective_value, parameters_of


@dataclass
class LayerwiseProblem:
    """θ_base and the per-task parts D_i [K, *shape] (float32) of every floating tensor, in the
    configuration's model order, and the groups of the coefficients."""

    base: Dict[str, torch.Tensor]
    parts: Dict[str, torch.Tensor]
    models: List[str]
    groups: List[str]
    group_index: Dict[str, int] = field(default_factory=dict)
    initial: float = INITIAL_COEFFICIENT  # Λ⁰
    minimum: Optional[float] = None  # the least coefficient the parts hold for (None: any)

    def state(self, coefficients: torch.Tensor) -> Dict[str, torch.Tensor]:
        return merged_state(self.base, self.parts, coefficients, self.group_index)


def _method_settings(config: Any, label: str) -> Any:
    """The method's settings from the shared parameters (None for task_arithmetic); refuses what has no
    per-task parts or cannot be read as one value."""
    if config.merge_method not in LAYERWISE_METHODS:
        raise ConfigError(f"{label}: layer-wise tuning needs a method whose merge is θ_base + Σ_i D_i with per-task "
                          f"parts ({', '.join(LAYERWISE_METHODS)}); {config.merge_method} has none")
    if config.slices or config.modules or config.tokenizer_source or config.tokenizer:
        raise ConfigError(f"{label}: layer-wise tuning reads whole models: no slices, modules or tokenizer settings")
    parameters = dict(config.parameters or {})
    if any(isinstance(v, (list, dict)) for v in parameters.values()):
        raise ConfigError(f"{label}: layer-wise tuning needs plain parameter values (no filters or gradients)")
    if config.merge_method == "tsv":
        return from_parameters(TSVParameters, parameters)
    if config.merge_method != "awd":
        return None
    settings = from_parameters(AWDParameters, parameters)
    if settings.combine != "task_arithmetic":
        raise ConfigError(f"{label}: layer-wise tuning of awd needs combine: task_arithmetic (AWD AdaMerging); "
                          f"combine: {settings.combine} has no per-task parts")
    return settings


def check_layerwise(config: Any, label: str) -> None:
    """Refuse, before anything is loaded, a configuration without per-task parts (one line)."""
    _method_settings(config, label)


def per_task_parts(config: Any, label: str, grouping: Grouping = "layer") -> LayerwiseProblem:
    """θ_base and D_i of every floating tensor of the configuration (module docstring)."""
    from mergekit.io.tasks import LoaderCache

    settings = _method_settings(config, label)
    base_ref = config.base_model
    refs = [m.model for m in config.models if m.model != base_ref]
    loaders = [LoaderCache().get(r) for r in (base_ref, *refs)]
    base = {}  # θ_base is kept (θ(Λ) is built on it): read once
    for name in sorted(loaders[0].index.tensor_paths):
        tensor = loaders[0].get_tensor(name)
        if tensor.is_floating_point():
            base[name] = tensor.to(torch.float32)
    names = list(base)

    def vectors_of(name: str) -> TaskVectors:  # one tensor's fine-tunes at a time: memory is the parts
        return TaskVectors(base[name], [loader.get_tensor(name).to(torch.float32) for loader in loaders[1:]])

    axis = vocabulary_axis_rule(str(base_ref.model.path), base_ref.override_architecture)
    selects, parts_of = _PARTS[config.merge_method]
    selected = {n for n in names
                if settings is not None and selects(n, base[n].ndim, settings.select, axis(n, tuple(base[n].shape)))}
    scope = None
    if config.merge_method == "awd" and settings.scope == "model":
        grams = {n: vectors_of(n).gram() for n in sorted(selected)}
        scope = solve_model_scope(grams, len(refs), settings.solver_settings())
    parts = {name: parts_of(vectors_of(name), settings if name in selected else None, scope, name) for name in names}
    groups = ordered_groups(names, grouping)
    form = LAYERWISE_FORMS[config.merge_method]
    return LayerwiseProblem(base, parts, [str(r) for r in refs], groups,
                            {n: groups.index(tensor_group(n, grouping)) for n in names}, form.initial, form.minimum)


def _awd_parts(vectors: TaskVectors, settings: Optional[AWDParameters], scope: Optional[ScopeDelta],
               name: str) -> torch.Tensor:
    """τ_i, or τ_i − δ where AWD disentangles (``settings`` given: the tensor is selected)."""
    if settings is None:
        return vectors.stack()
    delta = solve_delta(vectors, settings) if scope is None else _scope_delta(scope, name)
    return disentangle(vectors, delta) if delta is not None else vectors.stack()


def _tsv_parts(vectors: TaskVectors, settings: Optional[TSVParameters], scope: Any, name: str) -> torch.Tensor:
    """Task i's block of TSV-M (after AWD's δ with ``disentangle``) on a task matrix; τ_i / K elsewhere
    (the adapter averages the other tensors: (1/K) Σ_i w_i τ_i)."""
    stack = vectors.stack()
    if settings is None:
        return stack / stack.shape[0]
    if settings.disentangle:
        stack, _ = remove_redundant_vector(stack, settings.solver_settings())
    return tsv_task_parts(stack, settings.tsv_settings()).to(torch.float32)


# method -> (which tensors its per-tensor rule applies to, the parts of a tensor); task_arithmetic has no
# settings, so no tensor is selected and every part is τ_i
_PARTS = {"task_arithmetic": (is_disentangled, _awd_parts), "awd": (is_disentangled, _awd_parts),
          "tsv": (is_task_matrix, _tsv_parts)}


def _scope_delta(scope: ScopeDelta, name: str) -> Optional[Delta]:
    """The model scope's δ for one tensor (none for a tensor left out for a non-finite Gram matrix)."""
    return None if name in scope.non_finite_tensors else Delta(scope.included, coefficients=scope.coefficients)


def held_out_split(groups: Sequence[Sequence[Example]], every: int) -> Tuple[List[Example], List[Example]]:
    """(training lines, held-out lines): every ``every``-th line of each group is held out (a group of a
    single line trains only)."""
    train, held_out = [], []
    for lines in groups:
        for index, example in enumerate(lines):
            (held_out if len(lines) > 1 and index % every == every - 1 else train).append(example)
    return train, held_out


@dataclass
class LayerwiseResult:
    """The learned Λ [K, G] (the best held-out step's), the steps run, the objective's values."""

    coefficients: torch.Tensor
    groups: List[str]
    steps: int
    best_step: int
    train_value: float
    held_out_value: float
    initial_held_out_value: float
    history: List[Tuple[int, float, float]]  # (step, train value, held-out value)
    seconds: float


def learn_coefficients(problem: LayerwiseProblem, model: torch.nn.Module, tokenizer: Any, train: Sequence[Example],
                       held_out: Sequence[Example], objective: Objective, steps: int = 100, lr: float = 1e-3,
                       batch_size: int = 16, eval_every: int = 10, seed: int = 0,
                       checkpoint: Optional[Path] = None, checkpoint_key: str = "", progress: bool = False,
                       ) -> LayerwiseResult:
    """Adam on Λ from Λ⁰ (module docstring); ``lr`` in coefficient units (AdaMerging: 1e-3);
    ``checkpoint_key``: what the run depends on (a checkpoint of another key is not resumed);
    ``progress``: a bar of the steps with their ETA on stderr."""
    if not train or not held_out:
        raise EvaluationDataError("layer-wise tuning needs training lines and held-out lines")
    coefficients = initial_coefficients(len(problem.models), len(problem.groups), problem.initial)
    coefficients.requires_grad_(True)
    optimizer = torch.optim.Adam([coefficients], lr=lr)
    state = _resume(checkpoint, coefficients, optimizer, checkpoint_key)

    def value(examples: Sequence[Example], grad: bool) -> torch.Tensor:
        """The objective's mean over ``examples``; without gradient, in batches of ``batch_size`` (the
        vocabulary-wide logits of hundreds of lines at once would dominate memory)."""
        with torch.set_grad_enabled(grad):
            params = parameters_of(model, problem.state(coefficients))
            if grad:
                return objective_value(model, params, tokenizer, examples, objective)
            total = sum(float(objective_value(model, params, tokenizer, examples[i:i + batch_size], objective))
                        * len(examples[i:i + batch_size]) for i in range(0, len(examples), batch_size))
            return torch.tensor(total / len(examples))

    if state["best"] is None:
        with torch.no_grad():
            initial = float(value(held_out, False))
        state.update(best=coefficients.detach().clone(), best_value=initial, initial=initial, best_step=0)
    started = time.perf_counter() - state["seconds"]
    bar = progress_bar(total=steps, desc="tune --layerwise", unit="steps", enabled=progress)
    bar.update(state["step"])
    for step in range(state["step"] + 1, steps + 1):
        # each step's batch is a function of (seed, step), so a resumed run draws the same ones
        picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 1_000_003 + step))
        batch = [train[int(i)] for i in picked[:batch_size]]
        loss = value(batch, True)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if problem.minimum is not None:  # projected: the parts hold only above the minimum
            with torch.no_grad():
                coefficients.clamp_(min=problem.minimum)
        if step % eval_every == 0 or step == steps:
            held = float(value(held_out, False))
            state["history"].append((step, float(loss.detach()), held))
            if held < state["best_value"]:
                state.update(best=coefficients.detach().clone(), best_value=held, best_step=step)
            state.update(step=step, seconds=time.perf_counter() - started)
            _save(checkpoint, coefficients, optimizer, state, checkpoint_key)
            bar.set_postfix(held_out=f"{held:.4f}", refresh=False)
        bar.update(1)
    bar.close()
    train_value = float(value(train, False))
    return LayerwiseResult(state["best"], list(problem.groups), steps, state["best_step"], train_value,
                           state["best_value"], state["initial"], state["history"], time.perf_counter() - started)


def _resume(checkpoint: Optional[Path], coefficients: torch.Tensor, optimizer: torch.optim.Optimizer,
            key: str) -> Dict[str, Any]:
    state: Dict[str, Any] = {"step": 0, "best": None, "history": [], "seconds": 0.0}
    if checkpoint is None or not checkpoint.exists():
        return state
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if saved.get("key") != key:  # written for other inputs, settings or code: start over
        return state
    with torch.no_grad():
        coefficients.copy_(saved["coefficients"])
    optimizer.load_state_dict(saved["optimizer"])
    meta = json.loads(saved["meta"])
    state.update(meta, best=saved["best"], history=[tuple(h) for h in meta["history"]])
    return state


def _save(checkpoint: Optional[Path], coefficients: torch.Tensor, optimizer: torch.optim.Optimizer,
          state: Dict[str, Any], key: str) -> None:
    if checkpoint is None:
        return
    meta = {k: state[k] for k in ("step", "best_value", "initial", "best_step", "history", "seconds")}
    partial = checkpoint.with_name(checkpoint.name + ".partial")
    torch.save({"coefficients": coefficients.detach().clone(), "optimizer": optimizer.state_dict(),
                "best": state["best"], "meta": json.dumps(meta), "key": key}, partial)
    os.replace(partial, checkpoint)


__all__ = ["LayerwiseProblem", "check_layerwise", "per_task_parts", "held_out_split", "LayerwiseResult",
           "learn_coefficients"]
