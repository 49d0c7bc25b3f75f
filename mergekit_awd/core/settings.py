"""Settings dataclasses that are the single source of each parameter's default, choices and range.

A method's settings are a frozen dataclass whose fields are declared with ``setting``: the
default, a one-line description, and a range (``ge``/``gt``/``le``) for numbers; choices are the
field's ``Literal`` type.  ``validate_settings`` enforces exactly that in the core (booleans are
not numbers, numbers are finite), and the mergekit adapter generates its ``ParameterSpec``s from
the same fields (``mergekit_adapter.specs``), so the YAML and the Python API accept the same
values.  ``name`` is the parameter's name in YAML when it is not a Python identifier (``lambda``).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type, TypeVar

from mergekit_awd.errors import InvalidSettingError

T = TypeVar("T")

_KEY = "mergekit_awd_setting"


@dataclass(frozen=True)
class SettingInfo:
    """What a settings field declares besides its type and default."""

    description: str
    ge: Optional[float] = None
    gt: Optional[float] = None
    le: Optional[float] = None
    name: Optional[str] = None  # the YAML name, when it differs from the field name
    exposed: bool = True  # False: an internal setting, not a merge parameter
    group: Optional[str] = None  # e.g. "solver": lets a method annotate a group of parameters


def setting(default: Any, description: str, *, ge: Optional[float] = None, gt: Optional[float] = None,
            le: Optional[float] = None, name: Optional[str] = None, exposed: bool = True,
            group: Optional[str] = None) -> Any:
    """A dataclass field with its description and allowed range (see the module docstring)."""
    info = SettingInfo(description, ge=ge, gt=gt, le=le, name=name, exposed=exposed, group=group)
    return dataclasses.field(default=default, metadata={_KEY: info})


@dataclass(frozen=True)
class SettingField:
    """One field of a settings class: Python name, YAML name, type, default and declaration."""

    attribute: str
    name: str
    annotation: Any
    default: Any
    info: SettingInfo

    @property
    def optional(self) -> bool:
        """``Optional[...]``: None means "not set" (the caller's default applies)."""
        return typing.get_origin(self.annotation) is typing.Union and type(None) in typing.get_args(self.annotation)

    @property
    def value_type(self) -> Any:
        """The annotation without ``Optional``."""
        if not self.optional:
            return self.annotation
        return next(a for a in typing.get_args(self.annotation) if a is not type(None))

    @property
    def choices(self) -> Optional[Tuple[Any, ...]]:
        inner = self.value_type
        return typing.get_args(inner) if typing.get_origin(inner) is typing.Literal else None

    @property
    def kind(self) -> type:
        """bool, int, float or str (the type of a Literal's choices)."""
        choices = self.choices
        return type(choices[0]) if choices else self.value_type


def setting_fields(cls: type) -> List[SettingField]:
    """The ``setting`` fields of a settings dataclass, in declaration order (bases first)."""
    hints = typing.get_type_hints(cls)
    found = []
    for item in dataclasses.fields(cls):
        info = item.metadata.get(_KEY)
        if info is not None:
            found.append(SettingField(item.name, info.name or item.name, hints[item.name], item.default, info))
    return found


def _range_text(info: SettingInfo) -> str:
    low = f">= {info.ge:g}" if info.ge is not None else f"> {info.gt:g}" if info.gt is not None else ""
    high = f"<= {info.le:g}" if info.le is not None else ""
    return " and ".join(part for part in (low, high) if part)


def check_value(item: SettingField, value: Any) -> None:
    """``InvalidSettingError`` (a ValueError) naming the setting when ``value`` is outside its type, choices or range."""
    if value is None and item.optional:
        return
    choices = item.choices
    if choices is not None:
        if value not in choices or type(value) is not type(choices[0]):
            raise InvalidSettingError(f"{item.name} must be one of {list(choices)}, got {value!r}", name=item.name)
        return
    kind = item.kind
    if kind is bool:
        if not isinstance(value, bool):
            raise InvalidSettingError(f"{item.name} must be true or false, got {value!r}", name=item.name)
        return
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int and not (numeric and float(value).is_integer()):
        raise InvalidSettingError(f"{item.name} must be an integer, got {value!r}", name=item.name)
    if kind is float and not (numeric and math.isfinite(value)):
        raise InvalidSettingError(f"{item.name} must be a finite number, got {value!r}", name=item.name)
    info = item.info
    if ((info.ge is not None and value < info.ge) or (info.gt is not None and value <= info.gt)
            or (info.le is not None and value > info.le)):
        raise InvalidSettingError(f"{item.name} must be {_range_text(info)}, got {value!r}", name=item.name)


def check_choice(name: str, value: Any, choices: Tuple[Any, ...]) -> None:
    """``InvalidSettingError`` naming the setting when ``value`` is not one of ``choices`` (choices
    known only to the caller, such as the registered merge methods)."""
    if value not in choices:
        raise InvalidSettingError(f"{name} must be one of {list(choices)}, got {value!r}", name=name)


def validate_settings(instance: Any) -> None:
    """Check every ``setting`` field of a settings dataclass instance (``__post_init__``)."""
    for item in setting_fields(type(instance)):
        check_value(item, getattr(instance, item.attribute))


def from_parameters(cls: Type[T], parameters: Mapping[str, Any]) -> T:
    """An instance of ``cls`` from a mapping keyed by YAML names; missing keys take the defaults."""
    values: Dict[str, Any] = {}
    for item in setting_fields(cls):
        if item.name in parameters:
            values[item.attribute] = parameters[item.name]
    return cls(**values)


def subset(cls: Type[T], settings: Any) -> T:
    """The ``cls`` settings (a base class of ``type(settings)``) held by ``settings``."""
    return cls(**{item.attribute: getattr(settings, item.attribute) for item in setting_fields(cls)})


__all__ = ["SettingInfo", "SettingField", "setting", "setting_fields", "check_value", "check_choice", "validate_settings",
           "from_parameters", "subset"]
