"""The validation data of ``mergekit-awd tune``: a JSONL file, and how a causal LM is scored on it.

Each line is one JSON object:

* ``{"prompt": ..., "answer": ...}``: a generative example, scored by exact match of the greedy
  continuation (stripped) and by the answer's log-likelihood under the prompt (Σ_t log P, nats,
  answer tokens then EOS);
* ``{"prompt": ..., "choices": [...], "label": i}``: a classification example, scored by rank
  classification accuracy (the choice with the highest summed log-probability);
* ``{"prompt": ...}`` or ``{"prompt": ..., "choices": [...]}`` (no label): an unlabelled line, scored by
  nothing; ``--layerwise --objective entropy`` learns from it (the file needs labelled lines too: they
  score the grid);
* an optional ``"task"`` groups lines (default ``"default"``); a task holds one kind of labelled example.

The file must be UTF-8 (a byte-order mark is allowed); a classification line's choices must differ.
``check_lengths`` bounds every line in tokens before anything is merged: the prompt with the longest
choice, or with its answer (+ EOS) and with the greedy continuation (``max_new_tokens``), at most
``max_tokens`` (``DEFAULT_MAX_TOKENS``, and never more than the model's context
``max_position_embeddings``); an answer longer than ``max_new_tokens`` (which greedy decoding could
never produce) is refused too.

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
    DEFAULT_BATCH_SIZE, AnswerExample, ChoiceExample, PromptExample, accuracy, answer_log_likelihoods, encode_continuation,
    encode_prompt, greedy_exact_match, rank_classification,
)

DEFAULT_TASK = "default"
KINDS = ("answer", "choices")
# The longest line (prompt with answer, choice or generated continuation), tokens; --max-tokens.
DEFAULT_MAX_TOKENS = 2048
UNLABELLED = "unlabelled"  # the kind of a line without label or answer


@dataclass
class TuningTask:
    """The examples of one task: all generative or all classification."""

    name: str
    kind: str  # "answer" or "choices" (UNLABELLED while the task has unlabelled lines only)
    examples: List[Union[AnswerExample, ChoiceExample]] = field(default_factory=list)
    lines: List[int] = field(default_factory=list)  # each example's line in the file
    unlabelled: List[PromptExample] = field(default_factory=list)  # lines without label or answer
    unlabelled_lines: List[int] = field(default_factory=list)


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


def _example(record: Any, path: str, line: int) -> Tuple[str, str, Union[AnswerExample, ChoiceExample, PromptExample]]:
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
    if "answer" in record and "choices" in record:
        raise _fail(path, line, 'a line needs either "answer" (generative) or "choices" and "label" '
                                "(classification), not both")
    if "answer" not in record and "label" not in record:
        choices = record.get("choices", [])
        if "choices" in record:
            _check_choices(choices, path, line)
        return task, UNLABELLED, PromptExample(prompt, tuple(choices))
    if "answer" in record:
        if "label" in record:
            raise _fail(path, line, '"label" belongs with "choices", not with "answer"')
        return task, "answer", AnswerExample(prompt, _text(record, "answer", path, line))
    if "choices" not in record:
        raise _fail(path, line, '"label" belongs with "choices" (classification)')
    choices = record["choices"]
    _check_choices(choices, path, line)
    label = record["label"]
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise _fail(path, line, f'"label" must be an integer from 0 to {len(choices) - 1}, got {json.dumps(label)}')
    return task, "choices", ChoiceExample(prompt, tuple(choices), label)


def _check_choices(choices: Any, path: str, line: int) -> None:
    """At least two non-empty strings, all different."""
    if (not isinstance(choices, list) or len(choices) < 2
            or not all(isinstance(c, str) and c.strip() for c in choices)):
        raise _fail(path, line, f'"choices" must be a list of at least two non-empty strings, got '
                                f"{json.dumps(choices)[:80]}")
    repeated = [(choices.index(c), i) for i, c in enumerate(choices) if choices.index(c) != i]
    if repeated:
        first, again = repeated[0]
        raise _fail(path, line, f'"choices" {first} and {again} are the same text {json.dumps(choices[first])[:80]}: '
                                "the model cannot prefer one, so the line would score the same for every model")


def _decoded(raw: bytes, path: str) -> str:
    """``raw`` as UTF-8 (a leading byte-order mark dropped); ``EvaluationDataError`` naming the line
    of the first invalid byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[:error.start].count(b"\n") + 1
        raise _fail(path, line, f"not valid UTF-8 (byte {raw[error.start]:#04x} at offset {error.start}); "
                                "save the file as UTF-8") from None


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
    for number, line in enumerate(_decoded(raw, path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise _fail(path, number, f"not valid JSON ({error.msg} at column {error.colno})") from None
        name, kind, example = _example(record, path, number)
        task = tasks.setdefault(name, TuningTask(name, kind))
        if kind == UNLABELLED:
            task.unlabelled.append(example)
            task.unlabelled_lines.append(number)
            continue
        if task.kind == UNLABELLED and not task.examples:
            task.kind = kind
        if task.kind != kind:
            raise _fail(path, number, f"task {name!r} mixes generative and classification lines; give them "
                                      'different "task" names')
        task.examples.append(example)
        task.lines.append(number)
    if not tasks:
        raise EvaluationDataError(f"{path}: no examples (the file is empty)", path=path, line=0)
    if not any(task.examples for task in tasks.values()):
        raise EvaluationDataError(f"{path}: no labelled line (an answer, or choices with a label): tune scores its "
                                  "grid on them; unlabelled lines only add to --layerwise --objective entropy",
                                  path=path, line=0)
    return TuningData(path, tuple(tasks.values()), hashlib.sha256(raw).hexdigest()[:16])


def _longest_token_bytes(tokenizer: Any) -> Optional[int]:
    """An upper bound on the UTF-8 bytes one token stands for (the longest vocabulary entry's UTF-8
    length: byte-level and SentencePiece markers take at least as many bytes as they stand for)."""
    try:
        return max(len(str(token).encode("utf-8")) for token in tokenizer.get_vocab())
    except (AttributeError, TypeError, ValueError):
        return None


def _line_tokens(tokenizer: Any, example: Union[AnswerExample, ChoiceExample], max_new_tokens: int) -> Tuple[int, int]:
    """(tokens the line's longest sequence takes, the answer's tokens or 0)."""
    prompt = len(encode_prompt(tokenizer, example.prompt))
    if isinstance(example, PromptExample):
        return prompt + max([len(encode_continuation(tokenizer, c)) for c in example.choices] or [1]), 0
    if isinstance(example, ChoiceExample):
        return prompt + max(len(encode_continuation(tokenizer, c)) for c in example.choices), 0
    answer = len(encode_continuation(tokenizer, example.answer))
    return prompt + max(answer + 1, max_new_tokens), answer


def model_context(folder: str) -> Optional[int]:
    """The model's context (``max_position_embeddings`` of its config.json), or None."""
    from mergekit_awd.pipeline.model_files import read_config_json

    value = read_config_json(folder).get("max_position_embeddings")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_lengths(data: TuningData, tokenizer: Any, max_tokens: int = DEFAULT_MAX_TOKENS,
                  max_new_tokens: int = 16) -> None:
    """Every line fits ``max_tokens`` (see the module docstring); ``EvaluationDataError`` naming the
    file and line of the first that does not.  A line longer than ``max_tokens`` × the longest token's
    bytes is refused without tokenizing it."""
    longest = _longest_token_bytes(tokenizer)
    for task in data.tasks:
        for line, example in zip(task.lines + task.unlabelled_lines, task.examples + task.unlabelled):
            texts = [example.prompt, *(example.choices if hasattr(example, "choices") else [example.answer])]
            size = sum(len(t.encode("utf-8")) for t in texts)
            if longest is not None and size > max_tokens * longest:
                raise _fail(data.path, line, f"the line is {size} bytes, more than {max_tokens} tokens can hold "
                                             f"(--max-tokens {max_tokens})")
            tokens, answer = _line_tokens(tokenizer, example, max_new_tokens)
            if tokens > max_tokens:
                raise _fail(data.path, line, f"prompt and {'answer' if answer else 'choice'} take {tokens} tokens, "
                                             f"more than --max-tokens {max_tokens}")
            if answer > max_new_tokens:
                raise _fail(data.path, line, f"the answer is {answer} tokens, more than --max-new-tokens "
                                             f"{max_new_tokens}: greedy decoding could never produce it")


def score_model(model: Any, tokenizer: Any, data: TuningData, batch_size: int = DEFAULT_BATCH_SIZE,
                max_new_tokens: int = 16, tasks: Optional[Sequence[str]] = None) -> Dict[str, Dict[str, float]]:
    """Per task (``tasks``, default all): ``score`` (accuracy or exact match), and for generative
    tasks the mean answer log-likelihood ``log_likelihood`` (nats per example)."""
    out: Dict[str, Dict[str, float]] = {}
    for task in data.tasks:
        if (tasks is not None and task.name not in tasks) or not task.examples:
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


__all__ = ["TuningTask", "TuningData", "read_tuning_data", "check_lengths", "model_context", "score_model",
           "overall_score", "DEFAULT_TASK", "DEFAULT_MAX_TOKENS"]
