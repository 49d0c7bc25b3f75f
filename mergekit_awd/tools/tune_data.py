"""The validation data of ``mergekit-awd tune``: a JSONL file, and how a causal LM is scored on it.

Each line is one JSON object:

* ``{"prompt": ..., "answer": ...}``: a generative example, scored by exact match of the greedy
  continuation (stripped) and by the answer's log-likelihood under the prompt (Σ_t log P, nats,
  answer tokens then EOS);
* ``{"prompt": ..., "choices": [...], "label": i}``: a classification example, scored by rank
  classification accuracy (the choice with the highest summed log-probability);
* an optional ``"task"`` groups lines (default ``"default"``); a task holds one kind of example.

The score of a task is its accuracy (classification) or exact match (generative), in [0, 1]; the
overall score is the mean over tasks (of score / the reference's score, when each task has a
reference model).  Scoring is ``tools.lm_scoring``, the LLM benchmark's evaluator.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from mergekit_awd.errors import EvaluationDataError
from mergekit_awd.tools.lm_scoring import (
    DEFAULT_BATCH_SIZE, AnswerExample, ChoiceExample, accuracy, answer_log_likelihoods, greedy_exact_match,
    rank_classification,
)

DEFAULT_TASK = "default"
KINDS = ("answer", "choices")


@dataclass
class TuningTask:
    """The examples of one task: all generative or all classification."""

    name: str
    kind: str  # "answer" or "choices"
    examples: List[Union[AnswerExample, ChoiceExample]] = field(default_factory=list)


@dataclass(frozen=True)
class TuningData:
    """Tasks in file order, and a digest of the file (what a cached score was computed on)."""

    path: str
    tasks: Tuple[TuningTask, ...]
    digest: str

    @property
    def size(self) -> int:
        return sum(len(t.examples) for t in self.tasks)


def _fail(path: str, line: int, message: str) -> EvaluationDataError:
    return EvaluationDataError(f"{path}, line {line}: {message}", path=path, line=line)


def _text(record: Dict[str, Any], key: str, path: str, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, line, f'"{key}" must be a non-empty string, got {json.dumps(value)[:80]}')
    return value


def _example(record: Any, path: str, line: int) -> Tuple[str, str, Union[AnswerExample, ChoiceExample]]:
    if not isinstance(record, dict):
        raise _fail(path, line, f"expected a JSON object, got {type(record).__name__}")
    unknown = sorted(set(record) - {"prompt", "answer", "choices", "label", "task"})
    if unknown:
        raise _fail(path, line, f"unknown key(s) {unknown}; a line has prompt, answer or choices+label, and "
                                "optionally task")
    prompt = _text(record, "prompt", path, line)
    task = record.get("task", DEFAULT_TASK)
    if not isinstance(task, str) or not task:
        raise _fail(path, line, f'"task" must be a non-empty string, got {json.dumps(task)[:80]}')
    if ("answer" in record) == ("choices" in record):
        raise _fail(path, line, 'a line needs either "answer" (generative) or "choices" and "label" '
                                "(classification)")
    if "answer" in record:
        if "label" in record:
            raise _fail(path, line, '"label" belongs with "choices", not with "answer"')
        return task, "answer", AnswerExample(prompt, _text(record, "answer", path, line))
    choices = record["choices"]
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise _fail(path, line, f'"choices" must be a list of at least two non-empty strings, got '
                                f"{json.dumps(choices)[:80]}")
    if "label" not in record:
        raise _fail(path, line, 'missing "label" (the index of the right choice)')
    label = record["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise _fail(path, line, f'"label" must be an integer from 0 to {len(choices) - 1}, got {json.dumps(label)}')
    return task, "choices", ChoiceExample(prompt, tuple(choices), label)


def read_tuning_data(path: Union[str, os.PathLike]) -> TuningData:
    """Parse the JSONL file; ``EvaluationDataError`` naming the file and line for any bad line,
    and for a file without examples."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise EvaluationDataError(f"{path}: cannot read the validation data ({error.strerror or error})",
                                  path=path) from None
    tasks: Dict[str, TuningTask] = {}
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _fail(path, number, f"not valid JSON ({error.msg} at column {error.colno})") from None
        name, kind, example = _example(record, path, number)
        task = tasks.setdefault(name, TuningTask(name, kind))
        if task.kind != kind:
            raise _fail(path, number, f"task {name!r} mixes generative and classification lines; give them "
                                      'different "task" names')
        task.examples.append(example)
    if not tasks:
        raise EvaluationDataError(f"{path}: no examples (the file is empty)", path=path, line=0)
    return TuningData(path, tuple(tasks.values()), hashlib.sha256(raw).hexdigest()[:16])


def score_model(model: Any, tokenizer: Any, data: TuningData, batch_size: int = DEFAULT_BATCH_SIZE,
                max_new_tokens: int = 16, tasks: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Per task (``tasks``, default all): ``score`` (accuracy or exact match), and for generative
    tasks the mean answer log-likelihood ``log_likelihood`` (nats per example)."""
    out: Dict[str, Dict[str, float]] = {}
    for task in data.tasks:
        if tasks is not None and task.name not in tasks:
            continue
        if task.kind == "choices":
            predictions = rank_classification(model, tokenizer, task.examples, batch_size=batch_size)
            out[task.name] = {"score": accuracy(predictions, task.examples)}
        else:
            match = greedy_exact_match(model, tokenizer, task.examples, batch_size=batch_size,
                                       max_new_tokens=max_new_tokens)
            likelihoods = answer_log_likelihoods(model, tokenizer, task.examples, batch_size=batch_size)
            out[task.name] = {"score": match, "log_likelihood": sum(likelihoods) / len(likelihoods)}
    return out


def overall_score(scores: Dict[str, Dict[str, float]], references: Dict[str, float]) -> float:
    """Mean over tasks of the score, divided by the task's reference score where one is given."""
    values: List[float] = []
    for task, entry in scores.items():
        reference = references.get(task)
        values.append(entry["score"] / reference if reference else entry["score"])
    return sum(values) / len(values)


__all__ = ["TuningTask", "TuningData", "read_tuning_data", "score_model", "overall_score", "DEFAULT_TASK"]
