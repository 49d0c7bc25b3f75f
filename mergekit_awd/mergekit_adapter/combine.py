"""AWD in front of another task-vector method: ``awd`` with ``combine: X``.

For every tensor the ``awd`` scope disentangles, the models handed to method X are the
disentangled ones, θ̂_i = θ_base + (τ_i − δ) (paper eq. 11: "τ̂_i can be plugged into existing
merging methods"), built in float32 or wider; X's own ``merge_group`` then merges them exactly as
it merges fine-tunes: mergekit's ``GeneralizedTaskArithmeticMerge`` for ``ties``, ``dare_ties``,
``della`` and ``breadcrumbs_ties`` (its sparsification and sign consensus, not a rewrite), or this
package's ``tsv``, ``wudi``, ``iso_c``, ``iso_cts``, ``ace``.  Tensors AWD does not disentangle (``select``)
are merged by X from the original models.  ``combine: task_arithmetic`` is the paper's AWD Task
Arithmetic and does not come through here (``awd_method`` folds δ into one pass).

X's parameters are X's own: ``weight``, ``lambda`` and ``normalize`` come from ``awd``'s (left out:
X's defaults), the sparsification parameters below are borrowed from mergekit's specs (per model
``density``, ``gamma``, ``epsilon``; shared ``rescale``, ``int8_mask``; left out: X's defaults), and
``select``/``check_finite`` are passed to this package's methods, ``combine_solver`` is X's own
``solver`` (``wudi``: ``adam`` or ``exact``; awd's ``solver`` is AWD's); every other parameter of X keeps
X's default (for TSV's own options use ``merge_method: tsv`` with ``disentangle: true``).
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mergekit.merge_methods.base import MISSING, ParameterScope, ParameterSpec, TensorEntry, TensorGroup
from pydantic import Field
from typing_extensions import Annotated

from mergekit_awd.core.awd import TASK_ARITHMETIC
from mergekit_awd.core.wudi import WudiSolver

# mergekit's methods that merge task vectors and so can take the disentangled ones (mergekit 0.1.5
# declares no such property; the linear ``*_linear`` variants and model_stock are left out)
MERGEKIT_COMBINABLE: Tuple[str, ...] = ("ties", "dare_ties", "della", "breadcrumbs_ties")


def combining_methods(registered: Sequence[Any]) -> Tuple[str, ...]:
    """Every value ``combine`` accepts: task_arithmetic (AWD Task Arithmetic), mergekit's task-vector
    methods, then every method of this package in ``registered`` (``registration.our_methods``) that
    declares itself ``combinable``."""
    return (TASK_ARITHMETIC,) + MERGEKIT_COMBINABLE + tuple(m.name for m in registered if m.combinable)

# The sparsification parameters ``awd`` accepts for its combining method: their types and ranges
# (mergekit declares them as plain floats/bools) and what they do.
BORROWED_PER_MODEL: Dict[str, Tuple[Any, str]] = {
    "density": (Annotated[float, Field(gt=0, le=1)],
                "fraction of each disentangled task vector kept (combine: ties, dare_ties, della, "
                "breadcrumbs_ties; default: that method's)"),
    "gamma": (Annotated[float, Field(ge=0, lt=1)],
              "fraction of largest-magnitude entries removed (combine: breadcrumbs_ties; default: its 0.01)"),
    "epsilon": (Annotated[float, Field(ge=0, lt=1)],
                "spread of DELLA's magnitude-ranked keep probabilities (combine: della; default: its 0.15)"),
}
BORROWED_SHARED: Dict[str, Tuple[Any, str]] = {
    "rescale": (bool, "rescale the kept entries to each task vector's L1 norm (default: the combining method's)"),
    "int8_mask": (bool, "store the sign-consensus mask as int8 (default: the combining method's)"),
}
# awd's shared parameters passed on under another name (awd has its own of that name): name → X's name
RENAMED_SHARED: Dict[str, Tuple[str, Any, str]] = {
    "combine_solver": ("solver", WudiSolver,
                       "the combining method's own solver (combine: wudi: adam, the reference, or exact; "
                       "default: its adam)"),
}
# every parameter awd takes only for its combining method (nothing to awd's own task arithmetic)
BORROWED: frozenset = frozenset(BORROWED_PER_MODEL) | frozenset(BORROWED_SHARED) | frozenset(RENAMED_SHARED)
# awd's shared parameters that mean the same for the combining method, passed on when it has them
FORWARDED_SHARED: Tuple[str, ...] = ("lambda", "normalize", "select", "check_finite")


def borrowed_parameter_specs() -> Tuple[ParameterSpec, ...]:
    """``awd``'s specs of the borrowed parameters: optional (None = the combining method's default)."""
    specs = [ParameterSpec(name, Optional[kind], ParameterScope.NON_BASE, default=None, description=text)
             for name, (kind, text) in BORROWED_PER_MODEL.items()]
    specs += [ParameterSpec(name, Optional[kind], ParameterScope.SHARED, default=None, description=text)
              for name, (kind, text) in BORROWED_SHARED.items()]
    specs += [ParameterSpec(name, Optional[kind], ParameterScope.SHARED, default=None, description=text)
              for name, (_, kind, text) in RENAMED_SHARED.items()]
    return tuple(specs)


def _name_in_combining_method(name: str) -> str:
    """The combining method's name for awd's parameter ``name`` (``combine_solver`` → ``solver``)."""
    return RENAMED_SHARED[name][0] if name in RENAMED_SHARED else name


def combining_method(name: str) -> Any:
    """The registered merge method ``name`` (mergekit's or this package's)."""
    from mergekit.merge_methods import get

    return get(name)


def parameters_of(name: str) -> Dict[str, ParameterSpec]:
    """The parameter specs of combining method ``name``, by name."""
    return {spec.name: spec for spec in combining_method(name).spec.parameters}


def methods_using(parameter: str, choices: Sequence[str]) -> List[str]:
    """The combining methods among ``choices`` (other than task_arithmetic) that take ``parameter``."""
    target = _name_in_combining_method(parameter)
    return [name for name in choices if name != TASK_ARITHMETIC and target in parameters_of(name)]


def unused_borrowed(combine: str, given: Sequence[str]) -> List[str]:
    """The borrowed parameters (and ``normalize``) in ``given`` that ``combine`` does not take:
    they would do nothing."""
    if combine == TASK_ARITHMETIC:
        return [name for name in given if name in BORROWED]
    taken = set(parameters_of(combine))
    return [name for name in given
            if name in BORROWED | {"normalize"} and _name_in_combining_method(name) not in taken]


def _given(value: Any) -> bool:
    return value is not None and value is not MISSING


def combine_parameters(combine: str, parameters: Mapping[str, Any], ids: Sequence[Any]) -> Dict[str, Any]:
    """The parameters of ``combine``'s ``merge_group`` from ``awd``'s bound ``parameters``:
    forwarded and borrowed ones where given, every other one at the combining method's default."""
    borrowed_shared = set(BORROWED_SHARED) | set(FORWARDED_SHARED)
    renamed = {target: name for name, (target, _, _) in RENAMED_SHARED.items()}
    out: Dict[str, Any] = {}
    for name, spec in parameters_of(combine).items():
        if spec.scope == ParameterScope.SHARED:
            value = (parameters.get(renamed[name]) if name in renamed
                     else parameters.get(name) if name in borrowed_shared else None)
            if _given(value):
                out[name] = value
            elif not spec.required:
                out[name] = spec.default
        else:
            given = parameters.get(name) if (name == "weight" or name in BORROWED_PER_MODEL) else None
            values = {}
            for model in ids:
                value = given.get(model) if given is not None else None
                values[model] = value if _given(value) else spec.default
            out[name] = values
    return out


def resolved_combine_parameters(combine: str, parameters: Mapping[str, Any]) -> Dict[str, Any]:
    """The shared parameters a merge with ``combine`` ran with, as the card and report show them:
    the forwarded and borrowed ones resolved to the combining method's defaults when left out;
    the borrowed ones it does not take removed."""
    specs = parameters_of(combine)
    out = {}
    for name, value in parameters.items():
        target = _name_in_combining_method(name)
        if name in BORROWED and target not in specs:
            continue
        if not _given(value) and target in specs and not specs[target].required:
            value = specs[target].default
        out[name] = value
    return out


def merge_with(combine: str, group: TensorGroup, task_vectors: torch.Tensor, parameters: Mapping[str, Any],
               context: Any) -> torch.Tensor:
    """``combine`` run on θ_base and θ_base + task_vectors[i] (float32 or wider), in ``group``'s
    entry order; the result in the base's dtype."""
    base = group.base.tensor
    work = base.to(device=task_vectors.device, dtype=task_vectors.dtype)
    entries = [TensorEntry(group.base.id, work, is_base=True)]
    entries += [TensorEntry(entry.id, work + tv) for entry, tv in zip(group.non_base, task_vectors)]
    merged = run_method(combine, TensorGroup(entries, group.metadata), parameters, context)
    return merged.to(base.dtype)


def run_method(combine: str, group: TensorGroup, parameters: Mapping[str, Any], context: Any) -> torch.Tensor:
    """``combine``'s merge of ``group``: this package's methods with the merge's ``context`` (their
    report sections go to the same report) and without advancing the progress bar (the ``awd``
    tensor it is part of does); mergekit's through their ``merge_group``."""
    method = combining_method(combine)
    merge_in_context = getattr(method, "merge_in_context", None)
    if merge_in_context is not None:
        return merge_in_context(group, context, **parameters)
    return method.merge_group(group, **parameters)


__all__ = ["MERGEKIT_COMBINABLE", "combining_methods", "BORROWED_PER_MODEL", "BORROWED_SHARED", "RENAMED_SHARED", "BORROWED", "FORWARDED_SHARED",
           "borrowed_parameter_specs", "combining_method", "parameters_of", "methods_using", "unused_borrowed",
           "combine_parameters", "resolved_combine_parameters", "merge_with", "run_method"]
