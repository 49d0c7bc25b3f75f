"""The grid of ``mergekit-awd tune``: ``--grid NAME=START:STOP:STEP`` or ``--grid NAME=V1,V2,…``.

Values are numbers, ``true``/``false`` or words (YAML scalars).  Numbers are compared by value
(``1`` and ``1.0`` are one value), a range's values are rounded to 12 significant digits (so
``0.1:0.3:0.1`` gives 0.3, not 0.30000000000000004), and a range whose step is below that
resolution, or whose values would not be distinct, is refused.  A range or a grid has at most
``MAX_POINTS`` values; every check runs before anything is loaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Hashable, List, Sequence, Tuple

import yaml

from mergekit_awd.errors import ConfigError

DEFAULT_GRID = "lambda=0.1:1.5:0.1"
# the largest grid a tune accepts (points); every point costs one evaluation
MAX_POINTS = 1000
# a range's values are rounded to this many significant digits
SIGNIFICANT_DIGITS = 12


@dataclass(frozen=True)
class GridAxis:
    """One tuned parameter and its values, in the order given."""

    name: str
    values: Tuple[Any, ...]


def value_identity(value: Any) -> Hashable:
    """What makes two grid values the same: numbers by value (not spelling), booleans and words as such."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", float(value))
    return ("text", str(value))


def _rounded(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT_DIGITS}g}")


def _range(text: str, name: str, spec: str) -> Tuple[float, ...]:
    try:
        start, stop, step = (float(p) for p in spec.split(":"))
    except ValueError:
        raise ConfigError(f"--grid {text!r}: START:STOP:STEP must be three numbers", key=name) from None
    if not all(math.isfinite(v) for v in (start, stop, step)):
        raise ConfigError(f"--grid {text!r}: START, STOP and STEP must be finite numbers", key=name)
    if step <= 0 or stop < start:
        raise ConfigError(f"--grid {text!r}: needs STEP > 0 and STOP ≥ START", key=name)
    span = (stop - start) / step  # may overflow to inf: refused below, never converted to int
    if not math.isfinite(span) or span + 1 > MAX_POINTS:
        raise ConfigError(f"--grid {text!r}: gives more than {MAX_POINTS} values (the most a grid may have); "
                          "take a larger STEP", key=name)
    count = int(math.floor(span + 1e-9)) + 1
    values = tuple(_rounded(start + i * step) for i in range(count))
    if len(set(values)) != count:
        raise ConfigError(f"--grid {text!r}: STEP {step:g} is below the resolution of the values "
                          f"({SIGNIFICANT_DIGITS} significant digits); take a larger STEP", key=name)
    return values


def _listed(text: str, name: str, spec: str) -> Tuple[Any, ...]:
    values: List[Any] = []
    for part in spec.split(","):
        try:
            value = yaml.safe_load(part.strip()) if part.strip() else None
        except yaml.YAMLError:
            value = None
        if value is None or isinstance(value, (list, dict)):
            raise ConfigError(f"--grid {text!r}: {part.strip()!r} is not a value", key=name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--grid {text!r}: {part.strip()!r} is not a finite number", key=name)
        values.append(value)
    identities = [value_identity(v) for v in values]
    for i, identity in enumerate(identities):
        first = identities.index(identity)
        if first != i:
            raise ConfigError(f"--grid {text!r}: {values[i]!r} repeats {values[first]!r} (the same value)", key=name)
    if len(values) > MAX_POINTS:
        raise ConfigError(f"--grid {text!r}: {len(values)} values (at most {MAX_POINTS})", key=name)
    return tuple(values)


def parse_grid(text: str) -> GridAxis:
    """``name=start:stop:step`` (inclusive of stop, to 1e-9 of a step) or ``name=v1,v2,…``."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ConfigError(f"--grid {text!r}: expected NAME=START:STOP:STEP or NAME=V1,V2,…", key=name or None)
    return GridAxis(name, _range(text, name, spec) if ":" in spec else _listed(text, name, spec))


def grid_points(axes: Sequence[GridAxis]) -> List[dict]:
    """Every point of the product of ``axes`` (the first axis slowest); refuses an axis named twice
    and a product over ``MAX_POINTS``."""
    import itertools

    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ConfigError(f"--grid: {sorted({n for n in names if names.count(n) > 1})} given twice")
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_POINTS:
        raise ConfigError(f"the grid has {count} points (at most {MAX_POINTS})")
    return [dict(zip(names, values)) for values in itertools.product(*(a.values for a in axes))]


__all__ = ["GridAxis", "parse_grid", "grid_points", "value_identity", "DEFAULT_GRID", "MAX_POINTS"]
