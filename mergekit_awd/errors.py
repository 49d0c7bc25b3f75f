"""Every error mergekit-awd raises on purpose: one root, typed fields, one-line messages.

The command line turns a ``MergekitAwdError`` into its message and exit code 1; the Python API
raises it as is, so callers can read the fields (``path``, ``repo_id``, ``status`` …) instead of
parsing the text.  Each class also derives from the built-in type it used to be (``ValueError``,
``FileExistsError``, ``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

# Longest message the command line prints: a config error quotes user text, which may be huge.
MAX_MESSAGE_CHARS = 2000


def bounded(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]} … ({len(text) - limit} more characters)"


class MergekitAwdError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(MergekitAwdError, ValueError):
    """A configuration that cannot be used; the message names the file and the key."""

    def __init__(self, message: str, *, path: Optional[str] = None, key: Optional[str] = None) -> None:
        super().__init__(bounded(message))
        self.path = path
        self.key = key


class InvalidSettingError(MergekitAwdError, ValueError):
    """A setting outside its type, choices or range (a core settings dataclass, a command option)."""

    def __init__(self, message: str, *, name: Optional[str] = None) -> None:
        super().__init__(message)
        self.name = name


class TensorError(MergekitAwdError, ValueError):
    """A tensor that cannot be merged as it is: NaN/Inf in an input, a shape that differs from the
    base's, a tensor a model lacks, merged values that overflow; the message names tensor and model."""

    def __init__(self, message: str, *, tensor: Optional[str] = None, model: Optional[str] = None) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.model = model


class PlanError(MergekitAwdError, RuntimeError):
    """A merge that cannot be planned or run as configured (``scope: model`` outside our runner,
    ``solver: direct`` with ``scope: model``, a method name taken by another package)."""

    def __init__(self, message: str, *, tensor: Optional[str] = None) -> None:
        super().__init__(message)
        self.tensor = tensor


class OutputPathError(MergekitAwdError, ValueError):
    """OUT overlaps an input (equal to, inside, or containing it), or cannot be an output folder."""

    def __init__(self, message: str, *, path: str, input_path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path
        self.input_path = input_path


class OutputExistsError(MergekitAwdError, FileExistsError):
    """OUT exists and is not empty, and overwriting was not asked for."""

    def __init__(self, message: str, *, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class OutputBusyError(MergekitAwdError, RuntimeError):
    """Another mergekit-awd command is writing to the same OUT right now (its lock is held)."""

    def __init__(self, message: str, *, path: str, lock_path: str) -> None:
        super().__init__(message)
        self.path = path
        self.lock_path = lock_path


class OutputChangedError(MergekitAwdError, RuntimeError):
    """OUT changed while the command ran; OUT was not touched and the new output kept elsewhere."""

    def __init__(self, message: str, *, path: str, kept_path: str) -> None:
        super().__init__(message)
        self.path = path
        self.kept_path = kept_path


class ModelFileError(MergekitAwdError, ValueError):
    """A model file that cannot be read: truncated, corrupt, unsupported or malformed."""

    def __init__(self, message: str, *, path: str) -> None:
        super().__init__(message)
        self.path = path


class PostMergeError(MergekitAwdError, RuntimeError):
    """The merged weights are complete in OUT, but a step after them (card, report, marker) failed."""

    def __init__(self, message: str, *, path: str, failures: Sequence[Tuple[str, str]]) -> None:
        super().__init__(message)
        self.path = path
        self.failures = tuple(failures)


class IncompleteOutputError(MergekitAwdError, ValueError):
    """An output folder that is not a finished, unchanged merge; the message names folder and file."""

    def __init__(self, message: str, *, path: Optional[str] = None) -> None:
        super().__init__(message)
        self.path = path


class HubUploadError(MergekitAwdError, RuntimeError):
    """An upload that did not happen or did not finish; the message names the repository and
    never contains the token."""

    def __init__(self, message: str, *, repo_id: Optional[str] = None, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.repo_id = repo_id
        self.status = status


__all__ = [
    "MAX_MESSAGE_CHARS",
    "bounded",
    "MergekitAwdError",
    "ConfigError",
    "InvalidSettingError",
    "TensorError",
    "PlanError",
    "OutputPathError",
    "OutputExistsError",
    "OutputBusyError",
    "OutputChangedError",
    "ModelFileError",
    "PostMergeError",
    "IncompleteOutputError",
    "HubUploadError",
]
