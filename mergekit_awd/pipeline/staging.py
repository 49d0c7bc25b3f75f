"""Write an output folder beside OUT and move it into place only when it finished, under a lock.

Every command that writes a folder (merge, compress, ``inspect --out``) goes through
``staged_output``:

* **Staged**: the output is written into a temporary sibling ``.OUT.partial-*``.  An interrupted
  run (an exception, Ctrl-C, SIGTERM, a full disk) removes it and leaves OUT as it was; a finished
  one replaces OUT in two renames, with SIGTERM/SIGINT held meanwhile.
* **Locked**: ``.OUT.lock`` beside OUT is held (``flock``) from the check of OUT to the swap, so a
  second command into the same OUT refuses at once (``OutputBusyError``).  The kernel drops the
  lock when a process dies, so a stale lock file never blocks.
* **Checked again at the swap**: OUT is replaced only if it is still what was checked at the
  start: absent or empty, or, with ``overwrite``, the same previous output (every entry's path,
  type, size, mtime and inode).  If anything appeared or changed, OUT is left alone and the new
  output is kept in a visible sibling ``OUT.unplaced-*`` (``OutputChangedError``): nothing is lost.

This module imports neither torch nor mergekit (the SIGTERM tests load it in a small process).
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

from mergekit_awd.errors import OutputBusyError, OutputChangedError, OutputExistsError


class MergeInterrupted(KeyboardInterrupt):
    """SIGTERM (or SIGINT) arrived during a merge."""


class InterruptedAfterSwap(KeyboardInterrupt):
    """Ctrl-C arrived while the finished merge was being moved into OUT: it was held until the
    move completed, so OUT holds the complete new merge."""


# What OUT looked like when checked: ("absent",), ("empty",) or ("entries", (entry, ...)).
OutputState = Tuple


def _entries(folder: str) -> Tuple[Tuple[str, str, int, int, int], ...]:
    """(relative path, type, size, mtime_ns, inode) of everything under ``folder``; links not followed."""
    found = []
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs) + sorted(files):
            path = os.path.join(root, name)
            info = os.lstat(path)
            kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
            found.append((os.path.relpath(path, folder), kind, info.st_size if kind == "file" else 0,
                          info.st_mtime_ns if kind != "dir" else 0, info.st_ino))
    return tuple(sorted(found))


def output_state(out: str) -> OutputState:
    """What is at ``out`` now (see ``OutputState``)."""
    if not os.path.lexists(out):
        return ("absent",)
    if os.path.isdir(out) and not os.path.islink(out):
        entries = _entries(out)
        return ("entries", entries) if entries else ("empty",)
    return ("other",)


def check_output_target(out_path: str, overwrite: bool) -> str:
    """Absolute OUT path (symlinks resolved); refuse a file, or a non-empty folder unless ``overwrite``."""
    out = os.path.realpath(os.path.abspath(os.path.expanduser(out_path)))
    shown = os.path.abspath(out_path)
    if os.path.exists(out) and not os.path.isdir(out):
        raise OutputExistsError(f"{shown} exists and is not a folder", path=out)
    if os.path.isdir(out) and os.listdir(out) and not overwrite:
        raise OutputExistsError(
            f"{shown} exists and is not empty; pass --overwrite (overwrite=True) to replace it", path=out
        )
    return out


@contextmanager
def output_lock(out: str) -> Iterator[str]:
    """Hold ``.OUT.lock`` beside OUT exclusively; ``OutputBusyError`` at once when another holds it."""
    parent, name = os.path.split(out)
    lock_path = os.path.join(parent, f".{name}.lock")
    while True:
        handle = open(lock_path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            raise OutputBusyError(
                f"{out} is being written by another mergekit-awd command ({holder}; lock {lock_path}); "
                "wait for it to finish or choose another output folder",
                path=out, lock_path=lock_path,
            ) from None
        # The holder before us may have removed the file after we opened it: lock the live one.
        try:
            same = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        handle.close()
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield lock_path
    finally:
        try:
            os.unlink(lock_path)
        except FileNotFoundError:
            pass
        handle.close()


class SignalGuard:
    """SIGTERM and SIGINT during a staged write, handled in the main thread.

    While the work runs, SIGTERM raises ``MergeInterrupted`` and SIGINT does what it did before
    (``KeyboardInterrupt``).  While ``holding`` (creating the temporary folder, swapping OUT) both
    are recorded and acted on at ``release``.  Python runs signal handlers in the main thread
    whichever thread the kernel chose, so this holds with torch's worker threads too (a signal
    mask would only cover the thread that set it).  Outside the main thread it does nothing.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.active = threading.current_thread() is threading.main_thread()
        self.previous: dict = {}
        self.pending: list = []
        self.holding = False

    def __enter__(self) -> "SignalGuard":
        if self.active:
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum: int, frame) -> None:
        if self.holding:
            self.pending.append(signum)
        else:
            self._deliver(signum, frame)

    def _deliver(self, signum: int, frame) -> None:
        if signum == signal.SIGTERM:
            raise MergeInterrupted(f"received signal {signal.Signals(signum).name}")
        handler = self.previous.get(signum)
        if callable(handler):
            handler(signum, frame)
        elif handler != signal.SIG_IGN:
            raise KeyboardInterrupt

    def hold(self) -> None:
        self.holding = True

    def release(self) -> None:
        """Stop holding; act on a signal that arrived meanwhile (raises)."""
        self.holding = False
        pending, self.pending = self.pending, []
        for signum in pending:
            self._deliver(signum, None)


def _default_folder_mode() -> int:
    """The mode ``os.mkdir`` would give a folder (mkdtemp's is always 0700)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o777 & ~umask


def _keep_aside(staging: str, out: str) -> str:
    """Rename the finished ``staging`` to a visible, unused sibling of OUT; return its path."""
    parent, name = os.path.split(out)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    kept = tempfile.mkdtemp(prefix=f"{name}.unplaced-{stamp}-", dir=parent)
    os.rmdir(kept)
    os.rename(staging, kept)
    return kept


def _changed(out: str, staging: str, why: str) -> OutputChangedError:
    kept = _keep_aside(staging, out)
    return OutputChangedError(
        f"{out} changed while this command ran ({why}); it was left as it is and the new output "
        f"was kept in {kept}", path=out, kept_path=kept,
    )


def _swap(staging: str, out: str, expected: OutputState) -> None:
    """Move ``staging`` to ``out`` if OUT is still ``expected``; else ``OutputChangedError``."""
    parent, name = os.path.split(out)
    if expected[0] in ("absent", "empty"):
        # rename() replaces at most an empty folder: a file or any content at OUT makes it fail.
        if output_state(out) not in (("absent",), ("empty",)):
            raise _changed(out, staging, "something was written there")
        try:
            os.rename(staging, out)
        except OSError as error:
            if error.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                raise
            raise _changed(out, staging, "something was written there") from None
        return
    retired = tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=parent)
    os.rmdir(retired)
    try:
        os.rename(out, retired)
    except FileNotFoundError:
        raise _changed(out, staging, "it was removed") from None
    if output_state(retired) != expected:
        os.rename(retired, out)
        raise _changed(out, staging, "its files changed")
    try:
        os.rename(staging, out)
    except OSError:
        # Something was created at OUT after it was moved aside: keep both, lose neither.
        error = _changed(out, staging, "something was written there")
        previous = _keep_aside(retired, out)
        error.args = (f"{error.args[0]}; the previous output was kept in {previous}",)
        raise error from None
    shutil.rmtree(retired, ignore_errors=True)


@contextmanager
def staged_output(out_path: str, overwrite: bool = False) -> Iterator[str]:
    """Yield a temporary folder beside OUT; on success it becomes OUT, on failure it is removed.

    The lock on OUT is taken first, then OUT is checked (``check_output_target``) and its state
    recorded.  SIGTERM is turned into ``MergeInterrupted`` from before the temporary folder
    exists until the work finished; SIGTERM and SIGINT are then held while OUT is swapped and
    the lock released: a held Ctrl-C is raised as ``InterruptedAfterSwap`` (OUT holds the new
    output), a held SIGTERM then takes its usual course.
    """
    out = os.path.realpath(os.path.abspath(os.path.expanduser(out_path)))
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    guard = SignalGuard()
    with output_lock(out):
        check_output_target(out_path, overwrite)
        expected = output_state(out)
        with guard:
            staging: Optional[str] = None
            try:
                guard.hold()  # no interrupt between creating the folder and knowing its name
                try:
                    staging = tempfile.mkdtemp(prefix=f".{name}.partial-", dir=parent)
                finally:
                    guard.release()
                yield staging
                os.chmod(staging, _default_folder_mode())
            except BaseException:
                if staging is not None:
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            guard.hold()
            _swap(staging, out, expected)
    # OUT is in place and the lock released; now act on what arrived during the swap.
    if signal.SIGINT in guard.pending:
        raise InterruptedAfterSwap(f"{out} holds the complete merge") from KeyboardInterrupt()
    if signal.SIGTERM in guard.pending:
        os.kill(os.getpid(), signal.SIGTERM)


@contextmanager
def staged_file(path: str) -> Iterator[str]:
    """A temporary sibling of ``path`` to write; it replaces ``path`` in one rename when the block
    finishes, and is removed when it fails (``path`` then stays as it was)."""
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.partial-", dir=folder)
    os.close(handle)
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """``path`` holds ``text`` (UTF-8) or what it held before: never a partial file."""
    with staged_file(path) as temporary:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)


__all__ = [
    "staged_file",
    "atomic_write_text",
    "MergeInterrupted",
    "InterruptedAfterSwap",
    "OutputExistsError",
    "check_output_target",
    "output_lock",
    "output_state",
    "staged_output",
    "SignalGuard",
]
