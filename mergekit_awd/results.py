"""Typed results: dataclasses with ``to_json()`` that are also their JSON form as a mapping.

What a command returns (a merge's report, the compress report, the inspect report) is a frozen
dataclass with typed fields; ``to_json()`` gives the JSON-ready dict written to disk.  Like
transformers' ``ModelOutput`` (a dataclass that is also an ``OrderedDict``), the result is also a
``dict`` holding that JSON form, so ``result["key"]`` and ``json.dumps(result)`` keep working for
code written against the earlier dict results.  The mapping is a snapshot taken at creation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict


def _jsonable(value: Any) -> Any:
    if isinstance(value, JsonResult):
        return value.to_json()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    return value


class JsonResult(dict):
    """Base of result dataclasses (see the module docstring)."""

    def __post_init__(self) -> None:
        dict.update(self, self.to_json())

    def to_json(self) -> Dict[str, Any]:
        """The JSON-ready form (nested results, lists and dicts converted)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


__all__ = ["JsonResult"]
