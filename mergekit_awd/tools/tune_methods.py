"""``mergekit-awd tune CONFIG --data FILE --methods task_arithmetic,ties,awd,…``: choose the method
together with λ on the user's data (issue #29).

Each method gets its own configuration built from CONFIG (same base, models and per-model weights;
CONFIG's shared parameters the method takes; ``density: 0.5`` for mergekit's sparsifying methods when
CONFIG sets none) and its own λ grid (``--grid`` for all, else the method's: this package's methods say
theirs, ``PackageMergeMethod.lambda_grid``; mergekit's are below), tuned by ``tune_merge`` into
``OUT/<method>/`` (its linear path: one merge per method).  The winner (the best mean score, the first
in ``--methods`` order on a tie) is written as ``CONFIG.tuned.yml``; ``OUT/tune_methods.json`` and
``tune_methods.md`` hold the table per method.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from mergekit_awd.constants import TUNE_METHODS_REPORT, TUNE_METHODS_TABLE
from mergekit_awd.errors import ConfigError
from mergekit_awd.tools.tune_grid import DEFAULT_GRID, GridAxis, parse_grid
from mergekit_awd.tools.tune_result import TuneResult

# mergekit's methods: λ grids (ties and della divide by the agreeing weights: their λ sits near 1 or
# above) and the per-model parameters a configuration built for them needs
MERGEKIT_LAMBDA_GRIDS: Dict[str, str] = {
    "task_arithmetic": DEFAULT_GRID, "dare_ties": DEFAULT_GRID, "breadcrumbs_ties": DEFAULT_GRID,
    "ties": "lambda=0.5:2.5:0.25", "della": "lambda=0.5:2.5:0.25",
}
SPARSIFYING_DEFAULTS: Dict[str, Dict[str, float]] = {
    "ties": {"density": 0.5}, "dare_ties": {"density": 0.5}, "della": {"density": 0.5},
    "breadcrumbs_ties": {"density": 0.9, "gamma": 0.01},
}


def method_grid(method: str) -> GridAxis:
    """The λ grid of ``method``: this package's method's own, or mergekit's above."""
    from mergekit_awd.mergekit_adapter.registration import method_for

    ours = method_for(method)
    if ours is not None:
        return parse_grid(ours.lambda_grid or DEFAULT_GRID)
    if method not in MERGEKIT_LAMBDA_GRIDS:
        raise ConfigError(f"--methods: {method} is not a method tune can move along λ (choose from "
                          f"{', '.join(choosable_methods())})", key="--methods")
    return parse_grid(MERGEKIT_LAMBDA_GRIDS[method])


def choosable_methods() -> List[str]:
    """Every method ``--methods`` takes: mergekit's above and every registered method of this package."""
    from mergekit_awd.mergekit_adapter.registration import our_methods

    return list(MERGEKIT_LAMBDA_GRIDS) + [m.name for m in our_methods() if m.linear_in_lambda]


def method_configuration(config: Mapping[str, Any], method: str) -> Dict[str, Any]:
    """CONFIG for ``method`` (module docstring)."""
    from mergekit.merge_methods import get
    from mergekit.merge_methods.base import ParameterScope

    specs = {p.name: p for p in get(method).spec.parameters}
    out = copy.deepcopy(dict(config))
    out["merge_method"] = method
    out["parameters"] = {k: v for k, v in (out.get("parameters") or {}).items()
                         if k in specs and specs[k].scope == ParameterScope.SHARED}
    defaults = {"weight": 1.0, **SPARSIFYING_DEFAULTS.get(method, {})}
    for model in out.get("models") or []:
        if model.get("model") == out.get("base_model"):
            continue
        parameters = {k: v for k, v in (model.get("parameters") or {}).items() if k in specs}
        model["parameters"] = {**{k: v for k, v in defaults.items() if k in specs}, **parameters}
    return out


@dataclass
class MethodsResult:
    """Every method's tune, the winner and what was written."""

    methods: Dict[str, Dict[str, Any]]   # method -> chosen parameters, score, out folder
    winner: str
    tuned_config: Optional[str] = None
    files: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return {"methods": self.methods, "winner": self.winner, "tuned_config": self.tuned_config,
                "files": self.files}


def tune_methods(config_path: str, methods: Sequence[str], out_dir: str, run_tune: Callable[..., TuneResult],
                 grid: Sequence[GridAxis] = (), other_inputs: Sequence[Any] = ()) -> MethodsResult:
    """Tune every method of ``methods`` (``run_tune(config dict, out folder, grid)`` runs one
    ``tune_merge``) and write the winner as ``CONFIG.tuned.yml`` beside ``config_path``.  Checked
    first: every method name, ``OUT`` (empty, or this command's), and the tuned configuration against
    the merge's inputs, ``other_inputs`` ((role, path): the data, references) and ``OUT``."""
    from mergekit_awd.tools.tune_plan import read_configuration

    config, _ = read_configuration(config_path)
    if len(set(methods)) != len(methods) or not methods:
        raise ConfigError("--methods: give each method once", key="--methods")
    axes = {m: list(grid) or [method_grid(m)] for m in methods}  # every name checked before any tune
    _check_outputs(config, config_path, out_dir, methods, other_inputs)
    results: Dict[str, TuneResult] = {}
    configs: Dict[str, Dict[str, Any]] = {}
    for method in methods:
        configs[method] = method_configuration(config, method)
        results[method] = run_tune(configs[method], os.path.join(out_dir, method), axes[method])
    winner = max(methods, key=lambda m: (results[m].chosen_score, -methods.index(m)))
    table = {m: {"chosen": r.chosen, "score": r.chosen_score, "points": len(r.points), "merges": r.merges,
                 "seconds": r.seconds, "out": os.path.join(out_dir, m)} for m, r in results.items()}
    result = MethodsResult(table, winner)
    result.tuned_config = _write_winner(config_path, configs[winner], results[winner])
    result.files = _write_table(result, out_dir)
    return result


def _check_outputs(config: Dict[str, Any], config_path: str, out_dir: str, methods: Sequence[str],
                   other_inputs: Sequence[Any]) -> None:
    from mergekit.options import MergeOptions

    from mergekit_awd.constants import TUNED_SUFFIX
    from mergekit_awd.errors import OutputExistsError
    from mergekit_awd.pipeline.config import load_config
    from mergekit_awd.pipeline.input_paths import InputPath, check_out_disjoint, merge_inputs, resolve
    from mergekit_awd.tools.tune_plan import check_tuned_path

    inputs = merge_inputs(load_config(config)[0], config_path, MergeOptions())
    inputs += [InputPath(role, path, resolve(path)) for role, path in other_inputs]
    out = check_out_disjoint(out_dir, inputs, command="tune --methods")
    own = {*methods, TUNE_METHODS_REPORT, TUNE_METHODS_TABLE}
    if os.path.isdir(out) and any(name not in own for name in os.listdir(out)):
        raise OutputExistsError(f"{out_dir} holds files this command did not write; give another --out", path=out_dir)
    check_tuned_path(os.path.splitext(config_path)[0] + TUNED_SUFFIX, [*inputs, InputPath("tune's --out folder",
                                                                                          out_dir, out)])


def _write_winner(config_path: str, config: Dict[str, Any], result: TuneResult) -> str:
    from mergekit_awd.constants import TUNED_SUFFIX
    from mergekit_awd.tools.tune_plan import configured
    from mergekit_awd.tools.tune_report import write_tuned_config

    path = os.path.splitext(config_path)[0] + TUNED_SUFFIX
    write_tuned_config(path, configured(config, result.chosen), result)
    return path


def _write_table(result: MethodsResult, out_dir: str) -> Dict[str, str]:
    from mergekit_awd.pipeline.staging import atomic_write_text

    lines = ["| method | chosen | mean score | points | merges | seconds |", "| --- | --- | --- | --- | --- | --- |"]
    for method, entry in sorted(result.methods.items(), key=lambda item: -item[1]["score"]):
        mark = " (chosen)" if method == result.winner else ""
        lines.append(f"| {method}{mark} | {json.dumps(entry['chosen'])} | {entry['score']:.4f} | {entry['points']} | "
                     f"{entry['merges']} | {entry['seconds']:.0f} |")
    os.makedirs(out_dir, exist_ok=True)
    files = {"report": os.path.join(out_dir, TUNE_METHODS_REPORT), "table": os.path.join(out_dir, TUNE_METHODS_TABLE)}
    atomic_write_text(files["table"], "\n".join(lines) + "\n")
    atomic_write_text(files["report"], json.dumps(result.to_json(), indent=2, default=str) + "\n")
    return files


__all__ = ["MERGEKIT_LAMBDA_GRIDS", "method_grid", "choosable_methods", "method_configuration", "MethodsResult",
           "tune_methods"]
