"""Command-line options generated from a core settings dataclass: the same defaults, choices and
help as the library and the YAML (``core.settings``)."""

from __future__ import annotations

from typing import Any, Callable

import click

from mergekit_awd.core.settings import setting_fields


def settings_options(settings_class: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator adding ``--name`` for every exposed field of ``settings_class``."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        for item in reversed([i for i in setting_fields(settings_class) if i.info.exposed]):
            flag = "--" + item.name.replace("_", "-")
            if item.choices is not None:
                kind: Any = click.Choice([str(c) for c in item.choices])
            else:
                kind = item.kind
            function = click.option(flag, item.attribute, type=kind, default=item.default,
                                    show_default=item.default is not None, help=item.info.description + ".")(function)
        return function

    return decorate


__all__ = ["settings_options"]
