"""Write a merge into a temporary sibling folder and move it into place only when it finished.

An interrupted run (an exception, Ctrl-C, SIGTERM, a full disk) removes its temporary folder and
leaves the previous contents of OUT untouched; a finished one replaces OUT in two renames.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from typing import Iterator

from mergekit_awd.errors import OutputExistsError


class MergeInterrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived during a merge."""


class InterruptedAfterSwap(KeyboardInterrupt):
    """Ctrl-C arrived while the finished merge was being moved into OUT: it was held until the
    move completed, so OUT holds the complete new merge."""


def check_output_target(out_path: str, overwrite: bool) -> str:
    """Absolute OUT path; refuse a file, or a non-empty folder unless ``overwrite``."""
    out = os.path.abspath(out_path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputExistsError(f"{out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise OutputExistsError(f"{out} exists and is not empty; pass --overwrite (overwrite=True) to replace it")
    return out


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into ``MergeInterrupted`` while the block runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        raise MergeInterrupted(f"received signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# Signals held while OUT is swapped, so that OUT is never left half-replaced.
_HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _hold_signals():
    """Block SIGTERM/SIGINT in this thread (main thread, POSIX); return the mask to restore."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return None
    return signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)


def _release_signals(mask) -> None:
    if mask is not None:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def _default_folder_mode() -> int:
    """The mode ``os.mkdir`` would give a folder (mkdtemp's is always 0700)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


@contextmanager
def staged_output(out_path: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary folder beside OUT; on success it becomes OUT, on failure it is removed.

    SIGTERM is turned into ``MergeInterrupted`` from before the temporary folder exists until the
    merge finished; SIGTERM and SIGINT are then held while OUT is swapped and delivered after.
    """
    out = check_output_target(out_path, overwrite)
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    with terminate_as_interrupt():
        staging = None
        try:
            held = _hold_signals()  # no interrupt between creating the folder and knowing its name
            try:
                staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
            finally:
                _release_signals(held)
            yield staging
            os.chmod(staging, _default_folder_mode())
            held = _hold_signals()
        except BaseException:
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            raise
    swapped = False
    try:
        if os.path.isdir(out):
            retired = tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=parent)
            os.rmdir(retired)
            os.rename(out, retired)
            os.rename(staging, out)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, out)
        swapped = True
    finally:
        try:
            _release_signals(held)  # a Ctrl-C held during the swap is raised here
        except KeyboardInterrupt as error:
            if swapped:
                raise InterruptedAfterSwap(f"{out} holds the complete merge") from error
            raise
