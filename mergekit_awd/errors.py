"""Every error mergekit-awd raises on purpose: one root, typed fields, one-line messages.

The command line turns a ``MergekitAwdError`` into its message and exit code 1; the Python API
raises it as is, so callers can read the fields (``path``, ``repo_id``, ``status`` …) instead of
parsing the text.  Each class also derives from the built-in type it used to be (``ValueError``,
``FileExistsError``, ``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

# Longest message the command line prints: a config error quotes user text, which may be huge.
MAX_MESSAGE_CHARS = 2000


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters)"


class MergekitAwdError(Exception):
    """Root of every error this package raises on purpose.

    A subclass declares its typed fields as class annotations; they are keyword arguments of the
    constructor (None when not given) and attributes of the error.
    """

    def __init__(self, message: str, **fields: Any) -> None:
        declared = {name for cls in type(self).__mro__ for name in vars(cls).get("__annotations__", {})}
        unknown = sorted(set(fields) - declared)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {unknown}")
        super().__init__(message)
        for name in declared:
            setattr(self, name, fields.get(name))


class ConfigError(MergekitAwdError, ValueError):
    """A configuration that cannot be used; the message (bounded) names the file and the key."""

    path: Optional[str]
    key: Optional[str]

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(bounded(message), **fields)


class InvalidSettingError(MergekitAwdError, ValueError):
    """A setting outside its type, choices or range (a core settings dataclass, a command option)."""

    name: Optional[str]


class TensorError(MergekitAwdError, ValueError):
    """A tensor that cannot be merged as it is: NaN/Inf in an input, a shape that differs from the
    base's, a tensor a model lacks, merged values that overflow; the message names tensor and model."""

    tensor: Optional[str]
    model: Optional[str]


class PlanError(MergekitAwdError, RuntimeError):
    """A merge that cannot be planned or run as configured (``scope: model`` outside our runner,
    inputs that differ from the scope's, a method name taken by another package)."""

    tensor: Optional[str]


class DeviceError(MergekitAwdError, RuntimeError):
    """The device asked for (``--cuda``, ``--device``) is not one this torch can use."""

    device: Optional[str]


class OutputPathError(MergekitAwdError, ValueError):
    """OUT overlaps an input (equal to, inside, or containing it)."""

    path: str
    input_path: Optional[str]


class OutputExistsError(MergekitAwdError, FileExistsError):
    """OUT exists and is not empty (or is a file), and overwriting was not asked for."""

    path: Optional[str]


class OutputBusyError(MergekitAwdError, RuntimeError):
    """Another mergekit-awd command is writing to the same OUT right now (its lock is held)."""

    path: str
    lock_path: str


class OutputChangedError(MergekitAwdError, RuntimeError):
    """OUT changed while the command ran; OUT was not touched and the new output kept elsewhere."""

    path: str
    kept_path: str


class ModelFileError(MergekitAwdError, ValueError):
    """A model file that cannot be read: truncated, corrupt, unsupported or malformed."""

    path: str


class PostMergeError(MergekitAwdError, RuntimeError):
    """The merged weights are complete in OUT, but a step after them (card, report, marker) failed;
    ``failures``: (step, reason) pairs; ``outcome``: the merge's ``MergeOutcome``."""

    path: str
    failures: Sequence[Tuple[str, str]]
    outcome: Any


class IncompleteOutputError(MergekitAwdError, ValueError):
    """An output folder that is not a finished, unchanged merge; the message names folder and file."""

    path: Optional[str]


class HubUploadError(MergekitAwdError, RuntimeError):
    """An upload that did not happen or did not finish; the message names the repository and
    never contains the token."""

    repo_id: Optional[str]
    status: Optional[int]


class EvaluationDataError(MergekitAwdError, ValueError):
    """Evaluation data that cannot be scored (no examples, an empty answer, a bad JSONL line); the
    message names the file and line when the data came from one."""

    path: Optional[str]
    line: Optional[int]


__all__ = [
    "MAX_MESSAGE_CHARS",
    "bounded",
    "MergekitAwdError",
    "ConfigError",
    "InvalidSettingError",
    "TensorError",
    "PlanError",
    "DeviceError",
    "OutputPathError",
    "OutputExistsError",
    "OutputBusyError",
    "OutputChangedError",
    "ModelFileError",
    "PostMergeError",
    "IncompleteOutputError",
    "HubUploadError",
    "EvaluationDataError",
]
