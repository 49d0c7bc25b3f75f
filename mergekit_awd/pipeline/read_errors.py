"""Errors raised while mergekit's loaders read a weight file, turned into one error naming the file.

The up-front checks (``model_files``) read metadata only; a file damaged after them, or a pickled
``.bin`` whose data is corrupt, fails while mergekit reads tensors, with an error that names no
file.  ``model_read_errors`` finds the file from the loader's frames and raises ``ModelFileError``.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import zipfile
from typing import Iterator, Optional

from mergekit_awd.errors import ModelFileError
from mergekit_awd.pipeline.model_files import shorten

_PATH_LOCALS = ("shard_full_path", "shard_path", "file_path", "path", "model_path")


_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _failing_file(error: BaseException) -> Optional[str]:
    """The weight file mergekit's loader was opening when ``error`` was raised, from its frames."""
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):  # innermost first
        if not frame.f_globals.get("__name__", "").startswith("mergekit.io"):
            continue
        for name in _PATH_LOCALS:
            value = frame.f_locals.get(name)
            if isinstance(value, str) and value.lower().endswith(_WEIGHT_SUFFIXES):
                return value
    return None


def _raised_while_reading(error: BaseException) -> bool:
    """Raised by the file-reading libraries below mergekit's loader (not by mergekit itself)."""
    from safetensors import SafetensorError

    if isinstance(error, (SafetensorError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError)):
        return True
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame
        tb = tb.tb_next
    module = last.f_globals.get("__name__", "") if last is not None else ""
    return module.startswith(("torch", "pickle", "zipfile", "_pickle"))


@contextlib.contextmanager
def model_read_errors() -> Iterator[None]:
    """Turn a file-reading failure inside mergekit's loaders into a ModelFileError naming the file.

    Wraps ``SafetensorError`` (truncated or corrupt safetensors: "Error while deserializing
    header: …"), torch's ``UnpicklingError`` (weights_only refusal), and the ``RuntimeError`` /
    ``EOFError`` / ``KeyError`` … torch raises for a truncated or corrupt ``.bin``, when they come
    from a weight file mergekit's ``mergekit.io`` loader was opening.  Anything else, and errors
    whose file cannot be told, pass through unchanged.
    """
    try:
        yield
    except ModelFileError:
        raise
    except Exception as error:  # noqa: BLE001 - filtered below, re-raised unchanged otherwise
        path = _failing_file(error)
        if path is None or not _raised_while_reading(error):
            raise
        detail = shorten(str(error).split("\n")[0] or type(error).__name__)
        size = os.path.getsize(path) if os.path.isfile(path) else None
        where = f" ({size} bytes)" if size is not None else ""
        raise ModelFileError(f"{path}{where}: cannot be read: {type(error).__name__}: {detail}", path=path) from error


__all__ = ["model_read_errors"]
