"""A track's working context: the base and fine-tuned folders, CLI merges and their cached scores.

The protocol every track follows:

* a grid point is θ(λ) = θ_base + λ·D scored on the validation split, D from one ``mergekit-awd``
  merge at λ = 1 written in float32 (``lambda_path``: exact for every method benchmarked);
* the validation-chosen point is merged again through the CLI (in the track's ``final_dtype``) and
  that model is scored on test; ``lambda_rescale_max_abs_diff`` records how far it is from
  θ_base + λ·D;
* scores, merge timings and reports are cached in ``MERGES_DIR/records.json`` under keys made of the
  merge configuration, λ, the split and a fingerprint of the model files and of the package's code
  (``merge_code_version``), so an interrupted run resumes and a code change starts afresh.

A track subclasses ``Experiment`` with its scorer: ``correct_state`` (every example of a split's tasks
right or wrong, 0/1 in the split's order, for a state dict), and ``correct_folder`` where loading a
saved folder is not loading its tensors, plus ``final_extra_scores`` / ``entry_extras`` / ``log_details``
for what it records beyond accuracy.  Accuracies are the means of those lists.  On the test split the
per-example results are kept: a final merge's record holds ``scores["correct"][task]``, and
``reference_correct`` those of the fine-tunes and the base, so that every track can draw paired
bootstrap intervals (``benchmarks.harness.intervals``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence

from benchmarks.harness.lambda_path import LambdaPath, State, load_state, max_abs_difference
from benchmarks.harness.merging import MergeRun, MergeSpec, config_key, merge_config, run_cli_merge

SPLIT_NAMES = ("validation", "test")
Scores = Dict[str, float]
Correct = Dict[str, List[int]]  # task -> 0/1 per example, in the split's order


def accuracies(correct: Mapping[str, Sequence[int]]) -> Scores:
    """Accuracy per task: the mean of its 0/1 results."""
    empty = [task for task, values in correct.items() if not values]
    if empty:
        raise ValueError(f"no examples scored for {', '.join(empty)}")
    return {task: sum(values) / len(values) for task, values in correct.items()}


def fingerprint(paths: Sequence[Path]) -> str:
    """Identity of the model files a score depends on (path, size and modification time)."""
    parts = [f"{p}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


INVOCATION_PREFIX = "invocation/"
INVOCATION = f"{os.getpid()}-{time.time_ns()}"  # this process: a resumed run is several invocations


def recorded_seconds(records: Mapping[str, Any], fingerprints: Sequence[str]) -> Dict[str, float]:
    """The seconds (``seconds``: from each bench's creation to its last record; ``seconds_merging``,
    ``seconds_scoring``) of every invocation that recorded work for ``fingerprints``, summed: what a run
    resumed over several processes cost (a killed process's last unrecorded step excluded); ``invocations``:
    how many processes that was."""
    total: Dict[str, float] = {}
    processes = set()
    for key, entry in records.items():
        if key.startswith(INVOCATION_PREFIX) and key.rsplit("/", 1)[-1] in fingerprints:
            processes.add(key.split("/")[1])
            for part, value in entry.items():
                total[part] = total.get(part, 0.0) + value
    return {**total, "invocations": len(processes)} if processes else total


def invocation_seconds(records_path: Path, fingerprints: Sequence[str], this_invocation: Mapping[str, float]
                       ) -> Dict[str, Any]:
    """A results file's seconds: ``seconds`` (the benches' lifetimes), ``seconds_merging`` and ``seconds_scoring``
    summed over every process that recorded work for ``fingerprints`` in ``records_path`` (a run resumed after a
    kill is several, ``invocations``), and this process's own (``this_invocation``: ``invocation``, the wall time
    of this command, and the bench's parts) as ``seconds_this_invocation*``."""
    total = recorded_seconds(json.loads(records_path.read_text()) if records_path.exists() else {}, fingerprints)
    return {"seconds": round(total.get("seconds", 0.0)), "seconds_merging": round(total.get("seconds_merging", 0.0)),
            "seconds_scoring": round(total.get("seconds_scoring", 0.0)), "invocations": total.get("invocations", 0),
            "seconds_this_invocation": round(this_invocation["invocation"]),
            **{f"seconds_this_invocation_{k}": round(v) for k, v in this_invocation.items() if k != "invocation"}}


def merge_code_version() -> str:
    """mergekit's version and a hash of mergekit_awd's Python sources: cached merges and scores are
    only reused while both are unchanged (the package's ``code_version``, also what ``tune`` keys by)."""
    from mergekit_awd.code_version import code_version

    return code_version()


@dataclass
class Sweep:
    """One CLI merge at λ = 1 and the scores of θ(λ) = θ_base + λ·(θ(1) − θ_base) on a split."""

    spec: MergeSpec
    merge_seconds: float
    scores: Dict[float, Scores]
    report: Optional[Dict[str, Any]]


@dataclass
class FinalMerge:
    """A CLI merge at given settings, scored on the requested splits."""

    spec: MergeSpec
    seconds: float
    scores: Dict[str, Scores]
    report: Optional[Dict[str, Any]]
    lambda_rescale_max_abs_diff: Optional[float]


class Experiment:
    """Base folder, the merged fine-tunes (``model_dirs``), the record cache and the run's seconds."""

    final_dtype = "float32"  # the dtype of the final CLI merge (the grid's merges at λ = 1 are float32)

    def __init__(self, tasks: Sequence[str], base_dir: Path, model_dirs: Mapping[str, Path], merges_dir: Path,
                 fingerprint_suffix: str = "") -> None:
        self.tasks = list(tasks)
        self.base_dir = base_dir
        self.model_dirs = dict(model_dirs)  # task -> the folder a merge configuration lists
        self.merges_dir = merges_dir
        self.fingerprint = fingerprint([base_dir / "model.safetensors"] + [
            self.model_dirs[t] / "model.safetensors" for t in self.tasks
        ]) + f"{fingerprint_suffix}-{merge_code_version()}"
        self.records_path = merges_dir / "records.json"
        self.records: Dict[str, Dict[str, Any]] = (
            json.loads(self.records_path.read_text()) if self.records_path.exists() else {}
        )
        self._base_state = load_state(base_dir)
        # wall seconds this run spent in CLI merges and in scoring (the run's cost breakdown)
        self.seconds: Dict[str, float] = {"merging": 0.0, "scoring": 0.0}
        self._created = time.perf_counter()
        self._pending_correct: Dict[int, Correct] = {}  # id(state) -> its test results, until its final record

    # -- what a track supplies ----------------------------------------------------------------------
    def correct_state(self, state: State, split: str, tasks: Sequence[str]) -> Correct:
        """Per task, 1 where the model with weights ``state`` answers an example of ``split`` right, else 0."""
        raise NotImplementedError

    def correct_folder(self, folder: Path, split: str, tasks: Sequence[str]) -> Correct:
        """``correct_state`` of the saved model in ``folder`` (the fine-tunes, the base)."""
        return self.correct_state(load_state(folder), split, tasks)

    def final_extra_scores(self, state: State) -> Dict[str, Any]:
        """Scores of a final merge beyond the splits' (stored with them in the record): its per-example
        test results, ``correct``; a track adds its own (``super()`` first)."""
        return {"correct": self._pending_correct.pop(id(state), {})}

    def entry_extras(self, final: FinalMerge) -> Dict[str, Any]:
        """Fields a method's results row adds to ``results.method_entry``."""
        return {}

    def log_details(self, entry: Mapping[str, Any]) -> str:
        """Text for a method's ``[test]`` log line, after its average."""
        return ""

    # -- accuracies -------------------------------------------------------------------------------
    def score_state(self, state: State, split: str, tasks: Sequence[str]) -> Scores:
        """Accuracy per task; on test the per-example results wait for ``final_extra_scores`` of the same state."""
        correct = self.correct_state(state, split, tasks)
        if split == "test":
            self._pending_correct[id(state)] = correct
        return accuracies(correct)

    def score_folder(self, folder: Path, split: str, tasks: Sequence[str]) -> Scores:
        """Accuracy per task of the saved model in ``folder``."""
        return accuracies(self.correct_folder(folder, split, tasks))

    # -- scores of the references -------------------------------------------------------------------
    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - started

    def _cached(self, key: str, compute: Callable[[], Dict[str, Any]]) -> Dict[str, Any]:
        full_key = f"{key}/{self.fingerprint}"
        if full_key not in self.records:
            self.records[full_key] = compute()
            self._save()
        return self.records[full_key]

    def reference_correct(self, which: str) -> Correct:
        """Per-example test results of each fine-tune on its own task (``individual``) or of the base
        (``pretrained``), cached."""
        def compute() -> Dict[str, Any]:
            if which == "pretrained":
                return self.correct_folder(self.base_dir, "test", self.tasks)
            return {t: self.correct_folder(self.model_dirs[t], "test", [t])[t] for t in self.tasks}

        return self._cached(f"{which}/test/correct", compute)

    def individual_scores(self, split: str) -> Scores:
        """Each fine-tune on its own task (on test: the means of ``reference_correct``)."""
        if split == "test":
            return accuracies(self.reference_correct("individual"))
        return self._cached(f"individual/{split}", lambda: {
            t: self.score_folder(self.model_dirs[t], split, [t])[t] for t in self.tasks
        })

    def pretrained_scores(self, split: str) -> Scores:
        """The base on every task (on test: the means of ``reference_correct``)."""
        if split == "test":
            return accuracies(self.reference_correct("pretrained"))
        return self._cached(f"pretrained/{split}", lambda: self.score_folder(self.base_dir, split, self.tasks))

    # -- merges -----------------------------------------------------------------------------------
    def merge_configuration(self, spec: MergeSpec, tasks: Sequence[str], dtype: str = "float32") -> Dict[str, Any]:
        return merge_config(spec, self.base_dir, [self.model_dirs[t] for t in tasks], dtype=dtype)

    def _merge(self, config: Mapping[str, Any], work_dir: Path) -> MergeRun:
        run = run_cli_merge(config, work_dir)
        self.seconds["merging"] += run.seconds
        return run

    def _merge_at_one(self, spec: MergeSpec, tasks: Sequence[str]) -> Path:
        """Folder of the CLI merge of ``spec`` with λ = 1 (merged again if its weights were cleaned up;
        the first measured merge time is the one recorded)."""
        config = self.merge_configuration(spec.with_lambda(1.0), tasks)
        key = config_key(config)
        work_dir = self.merges_dir / key
        record_key = f"merge/{key}/{self.fingerprint}"
        if record_key not in self.records or not (work_dir / "model" / "model.safetensors").exists():
            run = self._merge(config, work_dir)
            self.records.setdefault(record_key, {"seconds": run.seconds, "report": run.report})
            self._save()
        return work_dir / "model"

    def _lambda_path(self, spec: MergeSpec, tasks: Sequence[str]) -> LambdaPath:
        return LambdaPath(self._base_state, load_state(self._merge_at_one(spec, tasks)))

    def sweep(self, spec: MergeSpec, lambdas: Sequence[float], tasks: Sequence[str], split: str = "validation",
              ) -> Sweep:
        """Scores of ``spec`` at every λ on ``split``, from one float32 CLI merge at λ = 1."""
        base_key = config_key(self.merge_configuration(spec.with_lambda(1.0), tasks))
        todo = [lam for lam in lambdas if f"sweep/{base_key}/{lam}/{split}/{self.fingerprint}" not in self.records]
        if todo:
            path = self._lambda_path(spec, tasks)
            for lam in todo:
                self._cached(f"sweep/{base_key}/{lam}/{split}", lambda: self.score_state(path.at(lam), split, tasks))
        merge_record = self.records[f"merge/{base_key}/{self.fingerprint}"]
        scores = {lam: self.records[f"sweep/{base_key}/{lam}/{split}/{self.fingerprint}"] for lam in lambdas}
        return Sweep(spec=spec, merge_seconds=merge_record["seconds"], scores=scores, report=merge_record["report"])

    def final(self, spec: MergeSpec, tasks: Sequence[str], splits: Sequence[str] = ("test",),
              check_lambda_path: bool = False) -> FinalMerge:
        """CLI merge at ``spec``'s own settings in ``final_dtype``, scored on ``splits`` (and
        ``final_extra_scores``); optionally compared with θ_base + λ·D."""
        config = self.merge_configuration(spec, tasks, dtype=self.final_dtype)
        key = config_key(config)
        work_dir = self.merges_dir / f"final-{key}"

        def compute() -> Dict[str, Any]:
            run = self._merge(config, work_dir)
            state = load_state(run.out_dir)
            scores: Dict[str, Any] = {split: self.score_state(state, split, tasks) for split in splits}
            scores.update(self.final_extra_scores(state))
            self._pending_correct.clear()  # only this state's results were waiting (none is left for another id)
            if "test" in splits and not scores.get("correct"):
                raise RuntimeError(f"{type(self).__name__}.final_extra_scores kept no per-example test results "
                                   "(it must extend super().final_extra_scores)")
            check = None
            if check_lambda_path:
                check = max_abs_difference(state, self._lambda_path(spec, tasks).at(float(spec.parameters["lambda"])))
            shutil.rmtree(run.out_dir, ignore_errors=True)
            return {"seconds": run.seconds, "scores": scores, "report": run.report, "check": check}

        record_key = f"final/{key}/{'+'.join(splits)}/{check_lambda_path}"
        stale = self.records.get(f"{record_key}/{self.fingerprint}")
        if stale is not None and "test" in splits and "correct" not in stale["scores"]:
            del self.records[f"{record_key}/{self.fingerprint}"]  # recorded before per-example results were kept
        record = self._cached(record_key, compute)
        return FinalMerge(spec=spec, seconds=record["seconds"], scores=record["scores"], report=record["report"],
                          lambda_rescale_max_abs_diff=record["check"])

    def cleanup(self) -> None:
        """Delete merged weights (scores, timings and reports stay in the record cache)."""
        for model_dir in self.merges_dir.glob("*/model"):
            shutil.rmtree(model_dir, ignore_errors=True)

    def _save(self) -> None:
        """Write the records, with this process's seconds so far (``recorded_seconds`` sums them over the
        invocations of a resumed run)."""
        self.records[f"{INVOCATION_PREFIX}{INVOCATION}/{self.fingerprint}"] = {
            "seconds": time.perf_counter() - self._created, **{f"seconds_{k}": v for k, v in self.seconds.items()}}
        self.records_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.records_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.records))
        tmp.replace(self.records_path)
