"""Progress of our own long phases: one bar at a time, counts and ETA, on stderr, off under ``--quiet``.

* :func:`progress_bar`: the one bar style of the package (tools loop with it: compress per model
  and per tensor, the Gram pass, ...).
* :class:`MergeProgress` and :func:`tracking_merge`: the merge's bar.  The planner announces how
  many steps each phase has (``expect``: the Gram pass of model scopes, then the merged tensors);
  our methods advance it from inside mergekit's executor (``advance``); a solve prints one line
  (``note``), each through the merge's ``MergeContext`` (no process-wide slot).  While it is active the
  runner turns mergekit's generic bars off, so bars never nest.
"""

from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional

BAR_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit} [{elapsed}<{remaining}, {rate_fmt}]"
PHASE_GRAM = "Gram pass"          # model scope: the K×K Gram matrix of every tensor of the scope
PHASE_MERGE = "merging tensors"   # every tensor our method writes (solves and SVDs happen here)


def progress_bar(total: int, desc: str, unit: str = "tensors", enabled: bool = True) -> Any:
    """A tqdm bar on stderr with counts and ETA (disabled: every call is a no-op)."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, file=sys.stderr,
                bar_format=None if interactive else BAR_FORMAT, mininterval=0.1 if interactive else 10.0,
                dynamic_ncols=True, leave=True)


class MergeProgress:
    """The merge's bar: phases announced by the planner, advanced by our methods."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.phases: Dict[str, int] = {}
        self.done: Dict[str, int] = {}
        self._bar: Any = None
        self._phase: Optional[str] = None
        self._lock = threading.Lock()

    def expect(self, phases: Dict[str, int]) -> None:
        """Announce the steps of each phase, in the order they run (replaces an earlier plan)."""
        with self._lock:
            self.phases = {name: count for name, count in phases.items() if count > 0}
            self.done = {name: 0 for name in self.phases}

    def advance(self, phase: str, steps: int = 1) -> None:
        with self._lock:
            if phase not in self.phases:
                return
            self.done[phase] += steps
            if not self.enabled:
                return
            if self._phase != phase:
                self._close_bar()
                self._phase = phase
                self._bar = progress_bar(self.phases[phase], f"{self.label} · {phase}")
                self._bar.update(self.done[phase] - steps)
            self._bar.update(steps)
            if self.done[phase] >= self.phases[phase]:
                self._close_bar()

    def note(self, message: str) -> None:
        """One line between bars (a solve, an estimate)."""
        if self.enabled:
            from tqdm.auto import tqdm

            tqdm.write(f"{self.label}: {message}", file=sys.stderr)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._phase = None

    def close(self) -> None:
        with self._lock:
            self._close_bar()


@contextmanager
def tracking_merge(label: str, enabled: bool) -> Iterator[MergeProgress]:
    """A fresh MergeProgress for one merge, closed at the end of the block (the runner hands it to
    the merge's ``MergeContext``)."""
    progress = MergeProgress(label, enabled)
    try:
        yield progress
    finally:
        progress.close()


__all__ = ["PHASE_GRAM", "PHASE_MERGE", "progress_bar", "MergeProgress", "tracking_merge", "BAR_FORMAT"]
