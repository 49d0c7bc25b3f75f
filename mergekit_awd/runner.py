"""Python API: run a merge with this package's methods through mergekit's own pipeline."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Union

from mergekit.config import MergeConfiguration
from mergekit.merge import run_merge as mergekit_run_merge
from mergekit.merge_methods import get as get_method
from mergekit.options import MergeOptions

from mergekit_awd.config_loading import ConfigError, ConfigInput, load_config
from mergekit_awd.mergekit_adapter.planner import awd_planner
from mergekit_awd.mergekit_adapter.registration import our_methods, register_methods
from mergekit_awd.mergekit_adapter.report import collecting_report


@dataclass(frozen=True)
class MergeOutcome:
    """Where a merge went: the output folder and, for our methods, its ``awd_report.json``."""

    out_path: str
    report_path: Optional[str]
    report: Optional[Dict[str, Any]]


def _parameter_blocks(config: MergeConfiguration):
    """Yield (location, parameters mapping) for every place a config sets parameters."""
    yield "parameters", config.parameters
    for i, model in enumerate(config.models or []):
        yield f"models[{i}] ({model.model}).parameters", model.parameters
    for i, piece in enumerate(config.slices or []):
        yield f"slices[{i}].parameters", piece.parameters
        for j, src in enumerate(piece.sources):
            yield f"slices[{i}].sources[{j}] ({src.model}).parameters", src.parameters
    for name, module in (config.modules or {}).items():
        yield f"modules.{name}.parameters", module.parameters
        for i, model in enumerate(module.models or []):
            yield f"modules.{name}.models[{i}] ({model.model}).parameters", model.parameters


def check_parameter_names(config: MergeConfiguration, label: str) -> None:
    """mergekit ignores unknown parameter names; for our methods a typo is an error."""
    ours = {m.spec.name: m for m in our_methods()}
    method = ours.get(config.merge_method)
    if method is None:
        return
    accepted = sorted(p.name for p in method.spec.parameters)
    for location, block in _parameter_blocks(config):
        for key in block or {}:
            if key not in accepted:
                raise ConfigError(
                    f"{label}: unknown parameter {key!r} in {location} for merge_method "
                    f"{config.merge_method}; accepted: {', '.join(accepted)}"
                )


def _resolved_parameters(config: MergeConfiguration) -> Dict[str, Any]:
    method = get_method(config.merge_method)
    values = {p.name: p.default for p in method.spec.shared_parameters}
    values.update(config.parameters or {})
    # ConditionalParameter (filters) and gradients become plain JSON structures.
    return json.loads(json.dumps(values, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o)))


def build_options(options: Union[MergeOptions, Dict[str, Any], None], overrides: Dict[str, Any]) -> MergeOptions:
    if isinstance(options, MergeOptions):
        data = options.model_dump()
    else:
        data = dict(options or {})
    data.update(overrides)
    return MergeOptions(**data)


def run_merge(
    config: ConfigInput,
    out_path: Union[str, os.PathLike],
    options: Union[MergeOptions, Dict[str, Any], None] = None,
    **option_overrides: Any,
) -> MergeOutcome:
    """Merge as ``mergekit-awd CONFIG OUT`` does.

    ``config``: a YAML path, YAML text, a dict or a MergeConfiguration.  ``options``: mergekit's
    MergeOptions (or a dict of its fields); keyword overrides such as ``cuda=True`` win.
    Our methods write ``awd_report.json`` into ``out_path``.
    """
    register_methods()
    merge_config, source, label = load_config(config)
    check_parameter_names(merge_config, label)
    merge_options = build_options(options, option_overrides)
    out_path = os.fspath(out_path)
    ours = merge_config.merge_method in {m.spec.name for m in our_methods()}
    with collecting_report() as report, awd_planner():
        mergekit_run_merge(merge_config, out_path, options=merge_options, config_source=source)
    if not ours:
        return MergeOutcome(out_path, None, None)
    models: List[str] = [str(m) for m in merge_config.referenced_models()]
    parameters = _resolved_parameters(merge_config)
    path = report.write(out_path, merge_config.merge_method, parameters, sorted(models))
    return MergeOutcome(out_path, path, report.to_json(merge_config.merge_method, parameters, sorted(models)))
