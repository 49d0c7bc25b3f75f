"""mergekit ``ParameterSpec``s generated from a core settings dataclass (``core.settings``).

The core's dataclass is the one home of every default, choice list and range; this module only
translates it: ``Literal`` choices stay ``Literal``, numbers become ``Annotated[int|float,
Field(ge, gt, le)]`` (floats finite), booleans stay ``bool``.  Every method also takes mergekit's
per-model ``weight``.
"""

from __future__ import annotations

from typing import Any, Dict, Literal, Optional, Tuple

from mergekit.merge_methods.base import ParameterScope, ParameterSpec
from pydantic import Field
from typing_extensions import Annotated

from mergekit_awd.core.settings import SettingField, setting_fields

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
DEFAULT_WEIGHT = 1.0


def pydantic_type(item: SettingField) -> Any:
    """The type mergekit validates a parameter with, from its settings field."""
    if item.choices is not None or item.kind is bool:
        return item.annotation
    info = item.info
    limits = {key: value for key, value in (("ge", info.ge), ("gt", info.gt), ("le", info.le)) if value is not None}
    if item.kind is float:
        kind = Annotated[float, Field(allow_inf_nan=False, **limits)]
    else:
        kind = Annotated[item.kind, Field(**limits)] if limits else item.kind
    return Optional[kind] if item.optional else kind  # None: left out, the documented default applies


def weight_spec(description: str) -> ParameterSpec:
    """``weight``: w_i, per fine-tuned model (mergekit's name), default 1."""
    return ParameterSpec("weight", FiniteFloat, ParameterScope.NON_BASE, default=DEFAULT_WEIGHT,
                         description=description)


def parameter_specs(settings_class: type, weight_description: str, group_notes: Optional[Dict[str, str]] = None,
                    choices: Optional[Dict[str, Tuple[Any, ...]]] = None) -> Tuple[ParameterSpec, ...]:
    """``weight`` and one shared ``ParameterSpec`` per exposed field of ``settings_class``;
    ``group_notes`` appends a note to the descriptions of a group (``{"solver": " (…)"}``);
    ``choices``: the allowed values of string settings whose choices the registry holds."""
    notes = group_notes or {}
    extra = choices or {}
    specs = [weight_spec(weight_description)]
    for item in setting_fields(settings_class):
        if not item.info.exposed:
            continue
        description = item.info.description + notes.get(item.info.group or "", "")
        kind = Literal[extra[item.name]] if item.name in extra else pydantic_type(item)
        specs.append(ParameterSpec(item.name, kind, ParameterScope.SHARED, default=item.default,
                                   description=description))
    return tuple(specs)


__all__ = ["FiniteFloat", "DEFAULT_WEIGHT", "pydantic_type", "weight_spec", "parameter_specs"]
