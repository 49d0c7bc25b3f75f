"""Choose λ (and other parameters) on the user's own data: ``mergekit-awd tune``.

A grid is a product of axes over the configuration's shared parameters (``lambda``, ``alpha``,
``density``…; per-model parameters are set for every model).  Each point is scored by a callable
(a transformers model → {task: {"score": s, …}}); the command's scorer is ``tune_data.score_model``
on a JSONL file.

**The linear path.**  When the method's output is θ(λ) = θ_base + λ·D with D independent of λ
(``LINEAR_IN_LAMBDA``: mergekit's task-vector methods at a fixed density and seed, and every method of
this package), the points that differ only in λ share one merge: a float32 merge at λ = 1 through the
normal pipeline, D = θ(1) − θ_base read tensor by tensor, and the scored model is moved along the path
in place, θ ← θ + (λ − λ_prev)·D (so memory holds two models: the scored model and D, whatever the
grid).  Every other method, and every value of a non-λ axis, is a merge through the pipeline.
A point's score is cached in ``OUT/tune_points.jsonl`` (keyed by the configuration, the point, the data
file's digest and the package version), so an interrupted tune resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import itertools
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import yaml

from mergekit_awd.errors import ConfigError
from mergekit_awd.progress import progress_bar
from mergekit_awd.tools.tune_path import ModelOnPath

# Methods whose output is θ_base + λ·D, D independent of λ (mergekit 0.1.5's generalized task
# arithmetic: ``mixed_delta *= lambda``; ours: θ_base + λ · merged).  dare/della draw their masks
# from torch's generator: the λ = 1 merge fixes them for the whole path.
LINEAR_IN_LAMBDA = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "della", "della_linear", "breadcrumbs",
                    "breadcrumbs_ties", "awd", "tsv", "wudi", "iso_c", "iso_cts")
LAMBDA = "lambda"
DEFAULT_GRID = "lambda=0.1:1.5:0.1"
POINTS_FILE = "tune_points.jsonl"
TUNED_SUFFIX = ".tuned.yml"
TUNED_MARKER = "# written by mergekit-awd tune"
# the largest grid a tune accepts (points); every point costs one evaluation
MAX_POINTS = 1000

# scorer(model, tasks): {task: {"score": s, …}} for ``tasks`` (None: every task of the data)
Scorer = Callable[[Any, Optional[Sequence[str]]], Dict[str, Dict[str, float]]]


@dataclass(frozen=True)
class GridAxis:
    """One tuned parameter and its values, in the order given."""

    name: str
    values: Tuple[Any, ...]


def parse_grid(text: str) -> GridAxis:
    """``name=start:stop:step`` (inclusive of stop, to 1e-9) or ``name=v1,v2,…`` (numbers, true/false
    or words)."""
    name, sep, spec = text.partition("=")
    name, spec = name.strip(), spec.strip()
    if not sep or not name or not spec:
        raise ConfigError(f"--grid {text!r}: expected NAME=START:STOP:STEP or NAME=V1,V2,…", key=name or None)
    if ":" in spec:
        try:
            start, stop, step = (float(p) for p in spec.split(":"))
        except ValueError:
            raise ConfigError(f"--grid {text!r}: START:STOP:STEP must be three numbers", key=name) from None
        if not (math.isfinite(start) and math.isfinite(stop) and math.isfinite(step)) or step <= 0 or stop < start:
            raise ConfigError(f"--grid {text!r}: needs STEP > 0 and STOP ≥ START", key=name)
        count = int(math.floor((stop - start) / step + 1e-9)) + 1
        if count > MAX_POINTS:
            raise ConfigError(f"--grid {text!r}: {count} values (at most {MAX_POINTS})", key=name)
        return GridAxis(name, tuple(round(start + i * step, 10) for i in range(count)))
    values = []
    for part in spec.split(","):
        value = yaml.safe_load(part.strip()) if part.strip() else None
        if value is None or isinstance(value, (list, dict)):
            raise ConfigError(f"--grid {text!r}: {part!r} is not a value", key=name)
        values.append(value)
    if len(set(map(repr, values))) != len(values):
        raise ConfigError(f"--grid {text!r}: a value is repeated", key=name)
    return GridAxis(name, tuple(values))


@dataclass
class TunePoint:
    """One scored point: its parameters, per-task scores, the overall score and how it was merged."""

    parameters: Dict[str, Any]
    tasks: Dict[str, Dict[str, float]]
    score: float
    merged_at_lambda_one: bool
    reused: bool = False


@dataclass
class TuneResult:
    """What a tune found: every point in grid order, the chosen one, and what it cost."""

    method: str
    axes: List[Dict[str, Any]]
    points: List[TunePoint]
    chosen: Dict[str, Any]
    chosen_score: float
    references: Dict[str, float]
    merges: int
    evaluations: int
    seconds: float                  # the whole tune, including a --merge
    merge_seconds: float = 0.0      # the tuning merges (not the --merge)
    evaluation_seconds: float = 0.0  # scoring, references included
    tuned_config: Optional[str] = None
    merged: Optional[str] = None
    files: Dict[str, str] = field(default_factory=dict)

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


def _config_dict(config: Union[str, os.PathLike, Dict[str, Any]]) -> Tuple[Dict[str, Any], Optional[str]]:
    if isinstance(config, dict):
        return copy.deepcopy(config), None
    path = os.fspath(config)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the configuration ({error.strerror or error})", path=path) from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML ({error})", path=path) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping", path=path)
    return data, path


def _per_model_names(method: str) -> List[str]:
    from mergekit.merge_methods import get
    from mergekit.merge_methods.base import ParameterScope

    return [p.name for p in get(method).spec.parameters if p.scope != ParameterScope.SHARED]


def configured(config: Dict[str, Any], point: Mapping[str, Any]) -> Dict[str, Any]:
    """``config`` with the point's parameters set: shared ones under ``parameters``, per-model ones
    (``density``, ``weight``…) in every model's ``parameters``."""
    out = copy.deepcopy(config)
    per_model = set(_per_model_names(out["merge_method"]))
    for name, value in point.items():
        if name in per_model:
            for model in out.get("models") or []:
                model.setdefault("parameters", {})[name] = value
        else:
            out.setdefault("parameters", {})[name] = value
    return out


def _point_key(config: Dict[str, Any], point: Mapping[str, Any], data_digest: str, references: Mapping[str, str]) -> str:
    from importlib.metadata import version

    text = json.dumps({"config": config, "point": point, "data": data_digest, "references": dict(references),
                       "version": version("mergekit-awd")}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _load_cache(path: str) -> Dict[str, Dict[str, Any]]:
    cache: Dict[str, Dict[str, Any]] = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                    cache[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue  # a line cut by an interruption: that point is scored again
    return cache


def _merge(config: Dict[str, Any], out_dir: str, cuda: bool, dtype: Optional[str] = None) -> str:
    from mergekit_awd.pipeline.runner import run_merge

    data = copy.deepcopy(config)
    if dtype is not None:
        data["dtype"] = dtype
        data.pop("out_dtype", None)
    run_merge(data, out_dir, cuda=cuda, quiet=True, copy_tokenizer=False, write_model_card=False, overwrite=True)
    return out_dir


def check_tuned_config_target(path: str) -> None:
    """The best configuration is written next to the input: never over a file tune did not write."""
    if os.path.exists(path):
        with open(path, encoding="utf-8", errors="replace") as handle:
            first = handle.readline().rstrip("\n")
        if first != TUNED_MARKER:
            raise ConfigError(f"{path} exists and was not written by mergekit-awd tune; move it away "
                              "(tune never overwrites a file it did not write)", path=path)


def check_tune_outputs(config: Dict[str, Any], config_path: Optional[str], out_dir: str,
                       merge_out: Optional[str], cuda: bool) -> None:
    """Before anything is written: ``out_dir`` and ``merge_out`` overlap no input (resolved), ``out_dir``
    is new, empty or an earlier tune's (it resumes there), ``merge_out`` is absent or empty."""
    from mergekit.options import MergeOptions

    from mergekit_awd.errors import OutputExistsError
    from mergekit_awd.pipeline.config import load_config
    from mergekit_awd.pipeline.input_paths import check_out_disjoint, merge_inputs
    from mergekit_awd.pipeline.staging import check_output_target

    merge_config, _, _ = load_config(config)
    inputs = merge_inputs(merge_config, config_path, MergeOptions(cuda=cuda))
    check_out_disjoint(out_dir, inputs, command="tune")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not os.path.exists(os.path.join(out_dir, POINTS_FILE)):
        raise OutputExistsError(f"{out_dir} is not empty and holds no earlier tune ({POINTS_FILE}); give another "
                                "--out (tune never writes into a folder it did not make)", path=out_dir)
    if merge_out is not None:
        check_out_disjoint(merge_out, inputs, command="merge")
        check_output_target(merge_out, False)


def tune_merge(
    config: Union[str, os.PathLike, Dict[str, Any]],
    scorer: Scorer,
    model_loader: Callable[[str], Any],
    out_dir: Union[str, os.PathLike],
    grid: Sequence[GridAxis] = (),
    *,
    references: Optional[Mapping[str, float]] = None,
    reference_models: Optional[Mapping[str, str]] = None,
    merge_out: Optional[Union[str, os.PathLike]] = None,
    cuda: bool = False,
    quiet: bool = False,
    data_digest: str = "",
) -> TuneResult:
    """Score every grid point of ``config`` with ``scorer`` (``Scorer``) and choose the best (the first
    best in grid order).  ``model_loader(folder)`` returns the model ``scorer`` takes, loaded from the base's folder
    (float32 is what the linear path assumes).  ``references``: each task's reference score (the
    overall score is then normalized per task); ``reference_models``: task → model folder, scored once
    to give them.  Writes ``out_dir`` (the point cache, ``tune_report.json``, ``tune.md``, the plot),
    ``CONFIG.tuned.yml`` next to a config file, and with ``merge_out`` the final merge."""
    started = time.perf_counter()
    data, config_path = _config_dict(config)
    method = data.get("merge_method")
    base = (data.get("base_model") or "")
    if not method or not isinstance(base, str) or not base:
        raise ConfigError("tune needs a configuration with merge_method and a base_model (a folder)",
                          path=config_path)
    axes = list(grid) or [parse_grid(DEFAULT_GRID)]
    names = [a.name for a in axes]
    if len(set(names)) != len(names):
        raise ConfigError(f"--grid: {sorted({n for n in names if names.count(n) > 1})} given twice")
    count = math.prod(len(a.values) for a in axes)
    if count > MAX_POINTS:
        raise ConfigError(f"the grid has {count} points (at most {MAX_POINTS})")
    tuned_path = None
    if config_path is not None:
        tuned_path = os.path.splitext(config_path)[0] + TUNED_SUFFIX
        check_tuned_config_target(tuned_path)
    # every point's configuration is checked before anything is merged or scored
    from mergekit_awd.pipeline.config import load_config
    from mergekit_awd.pipeline.validation import check_method_name, check_parameters
    from mergekit.merge_methods import get

    from mergekit_awd.mergekit_adapter.registration import register_methods

    register_methods()
    points = [dict(zip(names, values)) for values in itertools.product(*(a.values for a in axes))]
    for point in points:
        merge_config, _, label = load_config(configured(data, point))
        check_method_name(merge_config, label)
        check_parameters(merge_config, get(method), label)
    out_dir = os.fspath(out_dir)
    check_tune_outputs(data, config_path, out_dir, None if merge_out is None else os.fspath(merge_out), cuda)
    os.makedirs(out_dir, exist_ok=True)
    cache_path = os.path.join(out_dir, POINTS_FILE)
    cache = _load_cache(cache_path)
    linear = method in LINEAR_IN_LAMBDA and LAMBDA in names
    others = [n for n in names if not (linear and n == LAMBDA)]
    groups: Dict[Tuple, List[Dict[str, Any]]] = {}
    for point in points:
        groups.setdefault(tuple(repr(point[n]) for n in others), []).append(point)

    scored: Dict[int, TunePoint] = {}
    merges = evaluations = 0
    clock = {"merge": 0.0, "evaluation": 0.0}
    refs = dict(references or {})
    model: Optional[ModelOnPath] = None
    bar = progress_bar(total=len(points), desc=f"tune · {method}", unit="points", enabled=not quiet)
    scratch = tempfile.mkdtemp(prefix=".tune-", dir=out_dir)
    try:
        with open(cache_path, "a", encoding="utf-8") as cache_file:
            for task, folder in (reference_models or {}).items():
                key = _point_key({"reference": os.path.abspath(folder)}, {"task": task}, data_digest, {})
                if key not in cache:
                    model = model or ModelOnPath(model_loader(base))
                    model.load(folder)
                    with _timed(clock, "evaluation"):
                        scores = scorer(model.model, [task])
                    evaluations += 1
                    if task not in scores:
                        raise ConfigError(f"--reference {task}={folder}: the data has no task {task!r}", key=task)
                    cache[key] = {"key": key, "reference": task, "score": scores[task]["score"]}
                    cache_file.write(json.dumps(cache[key]) + "\n")
                    cache_file.flush()
                refs[task] = cache[key]["score"]
            for group in groups.values():
                keys = [_point_key(data, p, data_digest, reference_models or {}) for p in group]
                todo = [(p, k) for p, k in zip(group, keys) if k not in cache]
                for point, key in zip(group, keys):
                    if key in cache:
                        entry = cache[key]
                        scored[points.index(point)] = TunePoint(point, entry["tasks"], entry["score"],
                                                                entry["merged_at_lambda_one"], reused=True)
                        bar.update(1)
                if not todo:
                    continue
                if model is None:
                    model = ModelOnPath(model_loader(base))
                if linear:
                    at_one = dict(todo[0][0], **{LAMBDA: 1.0})
                    with _timed(clock, "merge"):
                        merged = _merge(configured(data, at_one), os.path.join(scratch, "merge"), cuda,
                                        dtype="float32")
                    merges += 1
                    model.set_direction(base, merged)
                    shutil.rmtree(merged, ignore_errors=True)
                    for point, key in sorted(todo, key=lambda pk: float(pk[0][LAMBDA])):
                        model.move_to(float(point[LAMBDA]))
                        with _timed(clock, "evaluation"):
                            scored[points.index(point)] = _score(point, scorer, model, refs, True, key, cache_file)
                        evaluations += 1
                        bar.update(1)
                else:
                    for point, key in todo:
                        with _timed(clock, "merge"):
                            merged = _merge(configured(data, point), os.path.join(scratch, "merge"), cuda,
                                            dtype="float32")
                        merges += 1
                        model.load(merged)
                        shutil.rmtree(merged, ignore_errors=True)
                        with _timed(clock, "evaluation"):
                            scored[points.index(point)] = _score(point, scorer, model, refs, False, key, cache_file)
                        evaluations += 1
                        bar.update(1)
    finally:
        bar.close()
        shutil.rmtree(scratch, ignore_errors=True)
    ordered = [scored[i] for i in range(len(points))]
    if refs:  # cached points were stored with their own normalization: recompute with today's references
        from mergekit_awd.tools.tune_data import overall_score

        for point in ordered:
            point.score = overall_score(point.tasks, refs)
    best = max(range(len(ordered)), key=lambda i: (ordered[i].score, -i))
    chosen = ordered[best]
    result = TuneResult(method, [{"name": a.name, "values": list(a.values)} for a in axes], ordered,
                        chosen.parameters, chosen.score, refs, merges, evaluations, 0.0,
                        merge_seconds=clock["merge"], evaluation_seconds=clock["evaluation"])
    best_config = configured(data, chosen.parameters)
    from mergekit_awd.tools.tune_report import tuning_note, write_tune_outputs, write_tuned_config

    if tuned_path is not None:
        write_tuned_config(tuned_path, best_config, result)
        result.tuned_config = tuned_path
    if merge_out is not None:
        from mergekit_awd.pipeline.runner import run_merge

        note = tuning_note(result)
        run_merge(best_config, merge_out, cuda=cuda, quiet=quiet, card_note=note)
        result.merged = os.fspath(merge_out)
    result.seconds = time.perf_counter() - started
    result.files = write_tune_outputs(result, out_dir)
    return result


@contextlib.contextmanager
def _timed(clock: Dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall time of the block to ``clock[phase]`` (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        clock[phase] += time.perf_counter() - started


def _score(point: Dict[str, Any], scorer: Scorer, model: ModelOnPath, refs: Mapping[str, float], linear: bool,
           key: str, cache_file) -> TunePoint:
    from mergekit_awd.tools.tune_data import overall_score

    tasks = scorer(model.model, None)
    score = overall_score(tasks, refs)
    cache_file.write(json.dumps({"key": key, "point": point, "tasks": tasks, "score": score,
                                 "merged_at_lambda_one": linear}, default=str) + "\n")
    cache_file.flush()
    return TunePoint(point, tasks, score, linear)


__all__ = ["GridAxis", "parse_grid", "TunePoint", "TuneResult", "tune_merge", "configured", "check_tune_outputs", "ModelOnPath",
           "LINEAR_IN_LAMBDA", "DEFAULT_GRID"]
