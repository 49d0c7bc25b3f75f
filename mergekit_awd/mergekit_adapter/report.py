"""Collects per-scope diagnostics during a merge and writes ``awd_report.json``."""

from __future__ import annotations

import json
import os
import threading
from contextlib import contextmanager
from typing import Any, Dict, Iterator, List, Optional

REPORT_FILENAME = "awd_report.json"


class MergeReport:
    """Thread-safe record of what each method did to each scope (tensor or group of tensors)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.scopes: Dict[str, Dict[str, Any]] = {}
        self.passthrough: List[str] = []

    def record_scope(self, key: str, entry: Dict[str, Any]) -> None:
        with self._lock:
            self.scopes[key] = entry

    def record_task_arithmetic(self, tensor: str) -> None:
        with self._lock:
            self.passthrough.append(tensor)

    def to_json(self, method: str, parameters: Dict[str, Any], models: List[str]) -> Dict[str, Any]:
        with self._lock:
            scopes = dict(sorted(self.scopes.items()))
            passthrough = sorted(self.passthrough)
        before = [s["mean_abs_cos_before"] for s in scopes.values() if s.get("active", 0) >= 2]
        after = [s["mean_abs_cos_after"] for s in scopes.values() if s.get("active", 0) >= 2]
        return {
            "method": method,
            "parameters": parameters,
            "models": models,
            "summary": {
                "scopes": len(scopes),
                "disentangled_tensors": sum(len(s.get("tensors", [])) for s in scopes.values()),
                "task_arithmetic_tensors": len(passthrough),
                "mean_abs_cos_before": sum(before) / len(before) if before else 0.0,
                "mean_abs_cos_after": sum(after) / len(after) if after else 0.0,
            },
            "scopes": scopes,
            "task_arithmetic_tensors": passthrough,
        }

    def write(self, out_dir: str, method: str, parameters: Dict[str, Any], models: List[str]) -> str:
        path = os.path.join(out_dir, REPORT_FILENAME)
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(method, parameters, models), handle, indent=2, sort_keys=False)
            handle.write("\n")
        return path


_ACTIVE_REPORT: Optional[MergeReport] = None
_ACTIVE_LOCK = threading.Lock()


@contextmanager
def collecting_report() -> Iterator[MergeReport]:
    """Make a fresh report the target of every method call in this process until exit.

    A process-wide slot (not a context variable) because mergekit may run tasks on worker
    threads that do not inherit context variables.
    """
    global _ACTIVE_REPORT
    report = MergeReport()
    with _ACTIVE_LOCK:
        previous, _ACTIVE_REPORT = _ACTIVE_REPORT, report
    try:
        yield report
    finally:
        with _ACTIVE_LOCK:
            _ACTIVE_REPORT = previous


def active_report() -> Optional[MergeReport]:
    """The report being collected, or None when the method runs outside our runner."""
    return _ACTIVE_REPORT


__all__ = ["MergeReport", "REPORT_FILENAME", "collecting_report", "active_report"]
