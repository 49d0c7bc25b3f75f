"""``mergekit-awd methods [NAME]``: this package's merge methods and their parameters, read from the
same specs and settings the YAML validation uses (``core.settings``)."""

from __future__ import annotations

from typing import List, Optional

import click

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


def describe_method(name: str) -> List[str]:
    """Lines: the method's name, title and paper, then one line per parameter."""
    method = method_for(name)
    lines = [f"{method.spec.name}: {method.spec.pretty_name} ({method.spec.reference_url})",
             f"  {'weight':<22} {'1.0':<10} {'per model':<28} {method.weight_description}"]
    for item in setting_fields(method.settings_class):
        if item.info.exposed:
            description = item.info.description + method.group_notes.get(item.info.group or "", "")
            lines.append(f"  {item.name:<22} {str(item.default):<10} {_allowed(item):<28} {description}")
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
