"""Everything ``mergekit-awd tune`` checks before it loads, merges or writes anything.

* The configuration: ``merge_method`` and a ``base_model`` folder; every grid point's configuration
  passes the merge command's own validation (``pipeline.validation``: method, parameter names and
  values, required parameters, model folders and shapes), so a point that ``merge`` would refuse is
  refused here, before the first model is loaded.
* ``--reference TASK=FOLDER``: a folder, and (when the data's tasks are known) a task of the data.
* Where tune writes: ``--out``, ``--merge`` and ``CONFIG.tuned.yml`` overlap no input (the merge's
  inputs, each ``--reference`` folder, the data file: ``pipeline.input_paths``' one rule) and
  ``--out`` and ``--merge`` do not overlap each other; ``--out`` is new, empty or an earlier tune's;
  ``--merge`` is absent or empty; ``CONFIG.tuned.yml`` is absent or tune's own, and its folder
  writable (a file is created there and removed).
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from mergekit_awd.constants import TUNE_POINTS, TUNE_REPORT, TUNE_SCRATCH, TUNED_SUFFIX
from mergekit_awd.errors import ConfigError, OutputExistsError, OutputPathError
from mergekit_awd.tools.tune_grid import GridAxis, grid_points

LAMBDA = "lambda"
TUNED_MARKER = "# written by mergekit-awd tune"
DATA_ROLE = "validation data"
# What makes a folder an earlier tune's --out (any one of them).
TUNE_OWN_FILES = (TUNE_POINTS, TUNE_REPORT, TUNE_SCRATCH)


@dataclass(frozen=True)
class TunePlan:
    """A checked tune: the configuration, its grid points, where it writes and what it reads."""

    config: Dict[str, Any]
    config_path: Optional[str]
    method: str
    base: str
    axes: Tuple[GridAxis, ...]
    points: Tuple[Dict[str, Any], ...]
    linear: bool
    out_dir: str
    merge_out: Optional[str]
    tuned_path: Optional[str]
    reference_models: Dict[str, str]
    model_inputs: Tuple[Tuple[str, str], ...]  # (role, path) of every model folder / adapter a merge reads
    data_path: Optional[str]

    @property
    def names(self) -> List[str]:
        return [a.name for a in self.axes]

    @property
    def merge_roles(self) -> List[str]:
        """The roles of every input a merged point's score depends on."""
        return [role for role, _ in self.model_inputs]

    @property
    def loader_roles(self) -> List[str]:
        """The base model: what the scored model and its tokenizer are loaded from."""
        return [self.model_inputs[0][0]]

    @property
    def data_roles(self) -> List[str]:
        return [DATA_ROLE] if self.data_path is not None else []

    @property
    def other_inputs(self) -> List[Tuple[str, str]]:
        """(role, path) of the inputs a score reads besides the merge's: each reference, the data."""
        found = [(reference_role(task), folder) for task, folder in self.reference_models.items()]
        return found + ([(DATA_ROLE, self.data_path)] if self.data_path is not None else [])


def reference_role(task: str) -> str:
    """The role of ``--reference TASK=FOLDER`` among a tune's inputs."""
    return f"reference model for task {task}"


def read_configuration(config: Union[str, os.PathLike, Dict[str, Any]]) -> Tuple[Dict[str, Any], Optional[str]]:
    """(the configuration as a dict, its file or None): a YAML file read strictly, or a dict copied."""
    if isinstance(config, dict):
        return copy.deepcopy(config), None
    path = os.fspath(config)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration ({error.strerror or error})", path=path) from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid YAML ({error})", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping", path=path)
    return data, path


def configured(config: Dict[str, Any], point: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` with the point's parameters set: shared ones under ``parameters``, per-model ones
    (``density``, ``weight``…) in every model's ``parameters``."""
    from mergekit.merge_methods import get
    from mergekit.merge_methods.base import ParameterScope

    out = copy.deepcopy(config)
    per_model = {p.name for p in get(out["merge_method"]).spec.parameters if p.scope != ParameterScope.SHARED}
    for name, value in point.items():
        if name in per_model:
            for model in out.get("models") or []:
                model.setdefault("parameters", {})[name] = value
        else:
            out.setdefault("parameters", {})[name] = value
    return out


def _validate_points(data: Dict[str, Any], points: Sequence[Dict[str, Any]]) -> Any:
    """Every point's configuration through the merge command's validation, the parameter checks strict
    for mergekit's methods too (model files checked once); returns the first point's configuration."""
    from mergekit.merge_methods import get

    from mergekit_awd.mergekit_adapter.registration import method_for, register_methods
    from mergekit_awd.pipeline.config import load_config
    from mergekit_awd.pipeline.model_checks import check_models
    from mergekit_awd.pipeline.validation import check_configuration, check_method_name

    register_methods()
    whole, _, label = load_config(data)
    check_method_name(whole, label)  # before ``configured`` asks mergekit for the method
    method = method_for(whole.merge_method) or get(whole.merge_method)
    first = None
    for point in points:
        merge_config, _, label = load_config(configured(data, point))
        check_configuration(merge_config, label, method)
        if first is None:
            check_models(merge_config, label)  # tune's merges use a temporary LoRA merge cache, as run_merge does
            first = merge_config
    return first


def _model_inputs(merge_config: Any, base: str) -> Tuple[Tuple[str, str], ...]:
    """(role, path) of the base model first, then every other model folder and adapter a merge reads."""
    from mergekit_awd.pipeline.input_paths import merge_inputs

    found = [(f"base model {base}", base)]
    for item in merge_inputs(merge_config):
        role = f"{item.role} {item.given}"
        if item.role == "Hugging Face cache":  # a Hub model is keyed by its name in the configuration
            continue
        if item.resolved != os.path.realpath(base) and role not in dict(found):
            found.append((role, item.given))
    return tuple(found)


def check_writable_folder(folder: str, what: str) -> None:
    """``folder`` accepts a new file (one is created and removed: root ignores permission bits)."""
    try:
        handle, probe = tempfile.mkstemp(prefix=".mergekit-awd-probe-", dir=folder)
    except OSError as error:
        raise OutputPathError(f"{folder}: cannot write {what} there ({error.strerror or error}); move the "
                              "configuration to a folder you can write, or copy it", path=folder) from None
    os.close(handle)
    os.remove(probe)


def check_tuned_path(path: str, inputs: List[Any]) -> None:
    """``CONFIG.tuned.yml``: no input, inside none, absent or tune's own; its folder writable."""
    from mergekit_awd.pipeline.input_paths import check_out_disjoint

    check_out_disjoint(path, inputs, command="tune's tuned configuration")
    if os.path.lexists(path):
        if not os.path.isfile(path) or os.path.islink(path):
            raise OutputExistsError(f"{path} exists and is not a file tune wrote; move it away", path=path)
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().rstrip("\n")
        if first != TUNED_MARKER:
            raise ConfigError(f"{path} exists and was not written by mergekit-awd tune; move it away "
                              "(tune never overwrites a file it did not write)", path=path)
    check_writable_folder(os.path.dirname(os.path.abspath(path)), f"the tuned configuration {os.path.basename(path)}")


def _check_outputs(out_dir: str, merge_out: Optional[str], tuned_path: Optional[str], inputs: List[Any]) -> None:
    """``--out``, ``--merge`` and the tuned configuration against the inputs and each other."""
    from mergekit_awd.pipeline.input_paths import InputPath, check_out_disjoint, resolve
    from mergekit_awd.pipeline.staging import check_output_target

    out = check_out_disjoint(out_dir, inputs, command="tune")
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputExistsError(f"--out {out_dir} exists and is not a folder", path=out)
    if os.path.isdir(out) and os.listdir(out) and not any(os.path.lexists(os.path.join(out, n)) for n in TUNE_OWN_FILES):
        raise OutputExistsError(f"{out_dir} is not empty and holds no earlier tune ({TUNE_POINTS}); give another "
                                "--out (tune never writes into a folder it did not make)", path=out_dir)
    if merge_out is not None:
        check_out_disjoint(merge_out, [*inputs, InputPath("tune's --out folder", out_dir, resolve(out_dir))],
                           command="--merge")
        check_output_target(merge_out, False)
    if tuned_path is not None:
        check_tuned_path(tuned_path, [*inputs, InputPath("tune's --out folder", out_dir, out)]
                          + ([InputPath("--merge folder", merge_out, resolve(merge_out))] if merge_out else []))


def _check_references(reference_models: Mapping[str, str], tasks: Optional[Sequence[str]]) -> None:
    for task, folder in reference_models.items():
        if tasks is not None and task not in tasks:
            raise ConfigError(f"--reference {task}={folder}: the data has no task {task!r} (its tasks: "
                              f"{', '.join(tasks)})", key=task)
        if not os.path.isdir(folder):
            raise ConfigError(f"--reference {task}={folder}: not a model folder", key=task)


def plan_tune(config: Union[str, os.PathLike, Dict[str, Any]], axes: Sequence[GridAxis],
              reference_models: Dict[str, str], out_dir: str, merge_out: Optional[str], cuda: bool, *,
              data_path: Optional[str] = None, tasks: Optional[Sequence[str]] = None,
              linear_methods: Sequence[str] = ()) -> TunePlan:
    """Check everything (see the module docstring) and return the plan; reads configuration, data
    and model headers only."""
    from mergekit_awd.pipeline.input_paths import InputPath, merge_inputs, resolve

    data, config_path = read_configuration(config)
    method, base = data.get("merge_method"), data.get("base_model")
    if not method or not isinstance(base, str) or not base or not os.path.isdir(os.path.expanduser(base)):
        raise ConfigError("tune needs a configuration with merge_method and a base_model (a local model folder)",
                          path=config_path)
    points = grid_points(axes)
    merge_config = _validate_points(data, points)
    _check_references(reference_models, tasks)
    from mergekit.options import MergeOptions

    names = [a.name for a in axes]
    tuned_path = None if config_path is None else os.path.splitext(config_path)[0] + TUNED_SUFFIX
    plan = TunePlan(data, config_path, method, base, tuple(axes), tuple(points),
                    method in linear_methods and LAMBDA in names, out_dir, merge_out, tuned_path,
                    dict(reference_models), _model_inputs(merge_config, base), data_path)
    inputs = merge_inputs(merge_config, config_path, MergeOptions(cuda=cuda))
    inputs += [InputPath(role, path, resolve(path)) for role, path in plan.other_inputs]
    _check_outputs(out_dir, merge_out, tuned_path, inputs)
    return plan


__all__ = ["TunePlan", "plan_tune", "configured", "reference_role", "DATA_ROLE", "check_writable_folder", "LAMBDA", "TUNED_MARKER"]
