"""Choose λ (and other parameters) on the user's own data: ``mergekit-awd tune``.

A grid is a product of axes over the configuration's shared parameters (``lambda``, ``alpha``,
``density``…; per-model parameters are set for every model); ``tune_grid`` parses it.  Each point is
scored by a callable (a transformers model → {task: {"score": s, …}}); the command's scorer is
``tune_data.score_model`` on a JSONL file.

**The linear path.**  When the method's output is θ(λ) = θ_base + λ·D with D independent of λ
(``linear_in_lambda()``: mergekit's task-vector methods at a fixed density and seed, and every method of
this package), the points that differ only in λ share one merge: a float32 merge at λ = 1 through the
normal pipeline, D = θ(1) − θ_base read tensor by tensor, and the scored model is moved along the path
in place, θ ← θ + (λ − λ_prev)·D (so memory holds two models: the scored model and D, whatever the
grid).  Every other method, and every value of a non-λ axis, is a merge through the pipeline.

**Safety** (``tune_plan`` checks, before anything is loaded, merged or written): every point's
configuration passes the merge command's validation; ``--out``, ``--merge`` and ``CONFIG.tuned.yml``
overlap no input (the merge's inputs, every ``--reference`` folder, the data file) nor each other;
the configuration's folder is writable.  ``--out`` is locked while a tune runs in it (a second tune
into it is refused at once); the tuning merges live in ``--out/.tune-scratch/``, removed when tune
ends (SIGTERM and Ctrl-C included) and at the next tune's start.  Scores are cached in
``--out/tune_points.jsonl`` keyed by the content of every input (``tune_cache``), so an interrupted
tune resumes where it stopped and a changed model, tokenizer or data file is scored again.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from mergekit_awd.constants import TUNE_POINTS, TUNE_REPORT, TUNE_SCRATCH
from mergekit_awd.errors import ConfigError
from mergekit_awd.presentation.tune_summary import tuning_note
from mergekit_awd.progress import progress_bar
from mergekit_awd.tools.tune_cache import InputIdentity, PointCache, cache_key, identify_all, input_digests
from mergekit_awd.tools.tune_grid import DEFAULT_GRID, GridAxis, parse_grid, value_identity
from mergekit_awd.tools.tune_layerwise import LayerwiseRequest, tune_layerwise
from mergekit_awd.tools.tune_path import ModelOnPath
from mergekit_awd.tools.tune_plan import LAMBDA, TUNED_MARKER, TunePlan, configured, plan_tune, reference_role
from mergekit_awd.tools.tune_report import write_tune_outputs, write_tuned_config
from mergekit_awd.tools.tune_result import CacheUse, TunePoint, TuneResult

# mergekit's methods whose output is θ_base + λ·D, D independent of λ (mergekit 0.1.5's generalized
# task arithmetic: ``mixed_delta *= lambda``).  dare/della draw their masks from torch's generator: the
# λ = 1 merge fixes them for the whole path.  A method of this package says so itself
# (``PackageMergeMethod.linear_in_lambda``): ``linear_in_lambda`` adds those from the registry.
MERGEKIT_LINEAR_IN_LAMBDA = ("task_arithmetic", "ties", "dare_ties", "dare_linear", "della", "della_linear",
                             "breadcrumbs", "breadcrumbs_ties")


def linear_in_lambda() -> Tuple[str, ...]:
    """The methods tune moves along λ without merging again: mergekit's above and ours that declare it."""
    from mergekit_awd.mergekit_adapter.registration import our_methods

    return MERGEKIT_LINEAR_IN_LAMBDA + tuple(method.name for method in our_methods() if method.linear_in_lambda)


# scorer(model, tasks): {task: {"score": s, …}} for ``tasks`` (None: every task of the data)
Scorer = Callable[[Any, Optional[Sequence[str]]], Dict[str, Dict[str, float]]]


def _merge(config: Dict[str, Any], out_dir: str, cuda: bool, dtype: Optional[str] = None) -> str:
    from mergekit_awd.pipeline.runner import run_merge

    data = copy.deepcopy(config)
    if dtype is not None:
        data["dtype"] = dtype
        data.pop("out_dtype", None)
    run_merge(data, out_dir, cuda=cuda, quiet=True, copy_tokenizer=False, write_model_card=False, overwrite=True)
    return out_dir


@contextlib.contextmanager
def tune_workspace(out_dir: str) -> Iterator[str]:
    """``out_dir`` created and locked (``OutputBusyError`` at once when another tune holds it), its
    scratch folder ``TUNE_SCRATCH`` emptied; yields the scratch folder, removed on the way out.
    SIGTERM raises ``MergeInterrupted`` meanwhile (``staging.SignalGuard``, in the main thread), so it
    is removed then too."""
    from mergekit_awd.pipeline.staging import SignalGuard, output_lock

    os.makedirs(out_dir, exist_ok=True)
    scratch = os.path.join(out_dir, TUNE_SCRATCH)
    with SignalGuard(), output_lock(os.path.realpath(out_dir)):
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
        try:
            yield scratch
        finally:
            shutil.rmtree(scratch, ignore_errors=True)


def _identities(plan: TunePlan) -> Dict[str, InputIdentity]:
    """The content identity of every model folder, adapter and file a score depends on."""
    return identify_all([*plan.model_inputs, *plan.other_inputs])


@dataclass
class _Run:
    """The state of one tune while it scores: the plan, the inputs' identities, the cache, counts."""

    plan: TunePlan
    scorer: Scorer
    model_loader: Callable[[str], Any]
    identities: Dict[str, InputIdentity]
    cache: PointCache
    parts: Dict[str, Any]
    cuda: bool
    use: CacheUse
    model: Optional[ModelOnPath] = None
    merges: int = 0
    evaluations: int = 0
    clock: Dict[str, float] = field(default_factory=lambda: {"merge": 0.0, "evaluation": 0.0})

    def loaded(self) -> ModelOnPath:
        if self.model is None:
            self.model = ModelOnPath(self.model_loader(self.plan.base))
        return self.model

    def lookup(self, kind: str, roles: Sequence[str], **parts: Any) -> Tuple[str, Optional[Dict[str, Any]], str]:
        """(key, cached entry or None, the key without the inputs) of one score."""
        identities = {role: self.identities[role] for role in roles}
        key = cache_key(kind, identities, **self.parts, **parts)
        partial = cache_key(kind, {}, **self.parts, **parts)
        entry = self.cache.get(key)
        if entry is None:
            for role in self.cache.changed_inputs({"partial": partial}, identities):
                if role not in self.use.changed:
                    self.use.changed.append(role)
        return key, entry, partial

    def store(self, key: str, partial: str, roles: Sequence[str], **content: Any) -> None:
        self.cache.put({"key": key, "partial": partial, "inputs": input_digests(self.identities, roles), **content})


def _score_references(run: _Run) -> Dict[str, float]:
    """Each ``--reference`` model's score on its task (cached by the content of the base, the
    reference and the data)."""
    refs: Dict[str, float] = {}
    for task, folder in run.plan.reference_models.items():
        roles = [*run.plan.loader_roles, reference_role(task), *run.plan.data_roles]
        key, entry, partial = run.lookup("reference", roles, task=task)
        if entry is None:
            model = run.loaded()
            model.load(folder)
            with _timed(run.clock, "evaluation"):
                scores = run.scorer(model.model, [task])
            run.evaluations += 1
            if task not in scores:
                raise ConfigError(f"--reference {task}={folder}: the data has no task {task!r}", key=task)
            entry = {"reference": task, "score": scores[task]["score"]}
            run.store(key, partial, roles, **entry)
        refs[task] = entry["score"]
    return refs


def _score_group(run: _Run, group: List[Tuple[int, Dict[str, Any]]], refs: Mapping[str, float], scratch: str,
                 bar: Any, scored: Dict[int, TunePoint]) -> None:
    """Score one group of points (equal but for λ on the linear path): cached ones from the cache,
    the rest after one merge at λ = 1 (linear path) or one merge each."""
    from mergekit_awd.tools.tune_data import overall_score

    plan = run.plan
    roles = [*plan.merge_roles, *plan.data_roles]
    todo = []
    for index, point in group:
        key, entry, partial = run.lookup("point", roles, config=plan.config, point=point)
        if entry is not None:
            scored[index] = TunePoint(point, entry["tasks"], entry["score"], entry["merged_at_lambda_one"], True)
            run.use.reused += 1
            bar.update(1)
        else:
            todo.append((index, point, key, partial))
    if not todo:
        return
    model = run.loaded()
    if plan.linear:
        _merge_into(run, model, scratch, dict(todo[0][1], **{LAMBDA: 1.0}), direction=True)
        todo.sort(key=lambda item: float(item[1][LAMBDA]))
    for index, point, key, partial in todo:
        if plan.linear:
            model.move_to(float(point[LAMBDA]))
        else:
            _merge_into(run, model, scratch, point, direction=False)
        with _timed(run.clock, "evaluation"):
            tasks = run.scorer(model.model, None)
        run.evaluations += 1
        run.use.scored += 1
        score = overall_score(tasks, refs)
        run.store(key, partial, roles, point=point, tasks=tasks, score=score, merged_at_lambda_one=plan.linear)
        scored[index] = TunePoint(point, tasks, score, plan.linear)
        bar.update(1)


def _merge_into(run: _Run, model: ModelOnPath, scratch: str, point: Dict[str, Any], direction: bool) -> None:
    """Merge ``point`` (float32) in the scratch folder and load it: as the λ path's direction, or as is."""
    with _timed(run.clock, "merge"):
        merged = _merge(configured(run.plan.config, point), os.path.join(scratch, "merge"), run.cuda, dtype="float32")
    run.merges += 1
    if direction:
        model.set_direction(run.plan.base, merged)
    else:
        model.load(merged)
    shutil.rmtree(merged, ignore_errors=True)


def _groups(plan: TunePlan) -> List[List[Tuple[int, Dict[str, Any]]]]:
    """The points (with their grid index) grouped by the values of every axis but λ on the linear path."""
    others = [n for n in plan.names if not (plan.linear and n == LAMBDA)]
    groups: Dict[Tuple, List[Tuple[int, Dict[str, Any]]]] = {}
    for index, point in enumerate(plan.points):
        groups.setdefault(tuple(value_identity(point[n]) for n in others), []).append((index, point))
    return list(groups.values())


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
    data_path: Optional[Union[str, os.PathLike]] = None,
    tasks: Optional[Sequence[str]] = None,
    scoring: Optional[Mapping[str, Any]] = None,
    prepare: Optional[Callable[[TunePlan], None]] = None,
    layerwise: Optional[LayerwiseRequest] = None,
) -> TuneResult:
    """Score every grid point of ``config`` with ``scorer`` (``Scorer``) and choose the best (the first
    best in grid order).  ``model_loader(folder)`` returns the model ``scorer`` takes, loaded from the base's folder
    (float32 is what the linear path assumes).  ``references``: each task's reference score (the
    overall score is then normalized per task); ``reference_models``: task → model folder, scored once
    to give them.  ``data_path``/``data_digest``: the scored data (an input: nothing is written over
    it; its digest keys the cache); ``tasks``: the data's task names (a ``--reference`` task outside
    them is refused before anything is loaded); ``scoring``: the scorer's settings (they key the
    cache); ``prepare(plan)``: run after every check, before anything is loaded (the command checks
    the data's lengths there).  Writes ``out_dir`` (the point cache, ``tune_report.json``,
    ``tune.md``, the plot), ``CONFIG.tuned.yml`` next to a config file, and with ``merge_out`` the
    final merge.  ``layerwise``: after the grid, one coefficient per task and group learned on the data
    (``tools.tune_layerwise``); the tuned configuration is then the learned one."""
    started = time.perf_counter()
    data_path = None if data_path is None else os.fspath(data_path)
    plan = plan_tune(config, list(grid) or [parse_grid(DEFAULT_GRID)], dict(reference_models or {}),
                     os.fspath(out_dir), None if merge_out is None else os.fspath(merge_out), cuda,
                     data_path=data_path, tasks=tasks, linear_methods=linear_in_lambda())
    if layerwise is not None:  # a method without per-task parts is refused before anything is merged
        from mergekit_awd.pipeline.config import load_config
        from mergekit_awd.tools.layerwise import check_layerwise

        check_layerwise(load_config(plan.config)[0], plan.config_path or "the configuration")
    if prepare is not None:
        prepare(plan)
    with tune_workspace(plan.out_dir) as scratch:
        identities = _identities(plan)
        cache = PointCache(plan.out_dir)
        from mergekit_awd.code_version import code_version

        use = CacheUse(inputs={role: i.digest for role, i in identities.items()}, code=code_version())
        parts = {"data": data_digest, "scoring": dict(scoring or {})}
        run = _Run(plan, scorer, model_loader, identities, cache, parts, cuda, use)
        scored: Dict[int, TunePoint] = {}
        bar = progress_bar(total=len(plan.points), desc=f"tune · {plan.method}", unit="points", enabled=not quiet)
        try:
            refs = {**dict(references or {}), **_score_references(run)}
            for group in _groups(plan):
                _score_group(run, group, refs, scratch, bar, scored)
        finally:
            bar.close()
            cache.close()
        result = _result(plan, [scored[i] for i in range(len(plan.points))], refs, run)
        tuned = None
        if layerwise is not None:
            tuned, result.layerwise = _layerwise(run, result, layerwise, quiet)
        _finish(plan, result, cuda, quiet, tuned)
    result.seconds = time.perf_counter() - started
    result.files = write_tune_outputs(result, plan.out_dir)
    return result


def _result(plan: TunePlan, points: List[TunePoint], refs: Dict[str, float], run: _Run) -> TuneResult:
    """The chosen point (the first best in grid order); cached points' scores normalized by today's references."""
    from mergekit_awd.tools.tune_data import overall_score

    if refs:
        for point in points:
            point.score = overall_score(point.tasks, refs)
    best = max(range(len(points)), key=lambda i: (points[i].score, -i))
    return TuneResult(plan.method, [{"name": a.name, "values": list(a.values)} for a in plan.axes], points,
                      points[best].parameters, points[best].score, refs, run.merges, run.evaluations, 0.0,
                      merge_seconds=run.clock["merge"], evaluation_seconds=run.clock["evaluation"], cache=run.use)


def _layerwise(run: _Run, result: TuneResult, request: LayerwiseRequest, quiet: bool
               ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The layer-wise tuning of the grid's choice without its λ: (tuned configuration, report entry)."""
    from mergekit_awd.code_version import code_version
    from mergekit_awd.tools.tune_data import overall_score

    plan = run.plan
    config = configured(plan.config, {k: v for k, v in result.chosen.items() if k != LAMBDA})
    model = run.loaded()
    model.load(plan.base)

    def score(scored_model: Any) -> Tuple[Dict[str, Dict[str, float]], float]:
        with _timed(run.clock, "evaluation"):
            tasks = run.scorer(scored_model, None)
        run.evaluations += 1
        return tasks, overall_score(tasks, result.references)

    identities = {role: run.identities[role] for role in [*plan.merge_roles, *plan.data_roles]}
    key = cache_key("layerwise", identities, **run.parts, config=config,
                    options=asdict(request.options), code=code_version())
    return tune_layerwise(config, plan.config_path or "the configuration", model.model,
                          request.tokenizer_loader(plan.base), request.tasks, score, result.chosen_score,
                          request.options, plan.out_dir, key, quiet)


def _finish(plan: TunePlan, result: TuneResult, cuda: bool, quiet: bool, tuned: Optional[Dict[str, Any]] = None
            ) -> None:
    """``CONFIG.tuned.yml`` and, with ``--merge``, the merge of the chosen configuration (``tuned``: the
    layer-wise one)."""
    best_config = tuned if tuned is not None else configured(plan.config, result.chosen)
    if plan.tuned_path is not None:
        write_tuned_config(plan.tuned_path, best_config, result)
        result.tuned_config = plan.tuned_path
    if plan.merge_out is not None:
        from mergekit_awd.pipeline.runner import run_merge

        run_merge(best_config, plan.merge_out, cuda=cuda, quiet=quiet, card_note=tuning_note(result.to_json()))
        result.merged = plan.merge_out


@contextlib.contextmanager
def _timed(clock: Dict[str, float], phase: str) -> Iterator[None]:
    """Add the wall time of the block to ``clock[phase]`` (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        clock[phase] += time.perf_counter() - started


__all__ = ["GridAxis", "parse_grid", "tune_merge", "configured",
           "tune_workspace", "ModelOnPath", "linear_in_lambda", "MERGEKIT_LINEAR_IN_LAMBDA", "DEFAULT_GRID",
           "TUNED_MARKER", "TUNE_POINTS", "TUNE_REPORT"]
