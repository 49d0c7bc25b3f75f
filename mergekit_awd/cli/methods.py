"""``mergekit-awd methods [NAME]``: this package's merge methods and their parameters, read from the
same specs and settings the YAML validation uses (``core.settings``, and a method's
``extra_parameter_specs``).  "—" as a default: left out, the description says what applies."""

from __future__ import annotations

import typing
from typing import List, Optional

import click
from mergekit.merge_methods.base import ParameterScope, ParameterSpec

from mergekit_awd.core.settings import SettingField, setting_fields
from mergekit_awd.mergekit_adapter.registration import method_for, our_methods


def _allowed(item: SettingField) -> str:
    if item.choices is not None:
        return " | ".join(str(c) for c in item.choices)
    if item.kind is bool:
        return "true | false"
    info = item.info
    low = f"≥ {info.ge:g}" if info.ge is not None else f"> {info.gt:g}" if info.gt is not None else ""
    high = f"≤ {info.le:g}" if info.le is not None else ""
    return ", ".join(part for part in (low, high) if part) or item.kind.__name__


def _spec_allowed(spec: ParameterSpec) -> str:
    """"per model" or "shared", and the range declared in the spec's pydantic type."""
    import annotated_types

    parts = ["per model" if spec.scope == ParameterScope.NON_BASE else "shared"]
    stack = [spec.value_type]
    while stack:
        annotation = stack.pop()
        origin = typing.get_origin(annotation)
        if origin is typing.Union:
            stack.extend(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin is typing.Annotated:
            inner, *metadata = typing.get_args(annotation)
            stack.append(inner)
            for item in metadata:
                for bound in getattr(item, "metadata", [item]):
                    for cls, attribute, sign in ((annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥"),
                                                 (annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "≤")):
                        if isinstance(bound, cls):
                            parts.append(f"{sign} {getattr(bound, attribute):g}")
        elif annotation is bool:
            parts.append("true | false")
    return ", ".join(parts)


def _default_text(value: object) -> str:
    return "—" if value is None else str(value)


def describe_method(name: str) -> List[str]:
    """Lines: the method's name, title and paper, then one line per parameter."""
    method = method_for(name)
    lines = [f"{method.spec.name}: {method.spec.pretty_name} ({method.spec.reference_url})",
             f"  {'weight':<22} {'1.0':<10} {'per model':<28} {method.weight_description}"]
    registry_choices = method.dynamic_choices()
    for item in setting_fields(method.settings_class):
        if item.info.exposed:
            description = item.info.description + method.group_notes.get(item.info.group or "", "")
            allowed = " | ".join(registry_choices[item.name]) if item.name in registry_choices else _allowed(item)
            lines.append(f"  {item.name:<22} {_default_text(item.default):<10} {allowed:<28} {description}")
    for spec in method.extra_parameter_specs():
        lines.append(f"  {spec.name:<22} {_default_text(spec.default):<10} {_spec_allowed(spec):<28} "
                     f"{spec.description}")
    lines.append(f"  report: {method.report_filename}")
    return lines


@click.command("methods")
@click.argument("name", required=False)
def methods_command(name: Optional[str]) -> None:
    """List this package's merge methods with their parameters (default, allowed values, meaning)."""
    names = [m.spec.name for m in our_methods()]
    if name is not None and name not in names:
        raise click.ClickException(f"unknown method {name!r}; this package's methods: {', '.join(names)} "
                                   "(mergekit's own methods take mergekit's parameters)")
    for index, shown in enumerate([name] if name else names):
        if index:
            click.echo("")
        click.echo("\n".join(describe_method(shown)))
