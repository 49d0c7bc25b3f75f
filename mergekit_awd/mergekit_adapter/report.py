"""Collects per-scope diagnostics during a merge and writes the method's report JSON.

Each method names its report file (``PackageMergeMethod.report_filename``).  A report has named
sections, each a mapping from a scope/tensor key to a JSON-ready entry: ``scopes`` for δ solves
(AWD, and TSV with ``disentangle``), and whatever else a method records (TSV's ``interference``
and ``averaged``).  The summary is computed from the sections, whichever method recorded them.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any, Dict, List

from mergekit_awd.results import JsonResult

# Section of tensors where a solved δ does not change the merge (the weights of the models it was
# solved over sum to zero: θ_base + λ Σ w_i (τ_i − δ) = θ_base + λ Σ w_i τ_i − λ (Σ w_i) δ).
NO_EFFECT = "delta_without_effect"
# Section of tensors merged by awd's combining method (combine: X ≠ task_arithmetic):
# {"method": X, "disentangled": whether X got the disentangled models}.
COMBINED = "combined"


class MergeReport:
    """Thread-safe record of what a method did to each scope (a tensor or a group of tensors)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sections: Dict[str, Dict[str, Dict[str, Any]]] = {"scopes": {}}
        self.passthrough: List[str] = []

    def record(self, section: str, key: str, entry: Dict[str, Any]) -> None:
        with self._lock:
            self.sections.setdefault(section, {})[key] = entry

    def record_scope(self, key: str, entry: Dict[str, Any]) -> None:
        """An AWD δ solve over ``entry["tensors"]`` (see ``SolveResult.summary``)."""
        self.record("scopes", key, entry)

    def record_no_effect(self, tensor: str, reason: str) -> None:
        """δ was solved for ``tensor`` but leaves its merge unchanged (``reason``)."""
        self.record(NO_EFFECT, tensor, {"reason": reason})

    def record_task_arithmetic(self, tensor: str) -> None:
        with self._lock:
            self.passthrough.append(tensor)

    def result(self, method: str, parameters: Dict[str, Any], models: List[str]) -> "MergeReportData":
        """What was recorded so far, with its summary (scopes, disentangled tensors, mean |cos|
        before and after over the solved scopes, the summed STI when interference was recorded)."""
        with self._lock:
            sections = {name: dict(sorted(entries.items())) for name, entries in self.sections.items()}
            passthrough = sorted(self.passthrough)
        scopes = sections["scopes"]
        solved = [s for s in scopes.values() if s.get("active", 0) >= 2]
        before = [s["mean_abs_cos_before"] for s in solved]
        after = [s["mean_abs_cos_after"] for s in solved]
        interference = [e["sti"] for e in sections.get("interference", {}).values() if isinstance(e.get("sti"), (int, float))]
        no_effect = set(sections.get(NO_EFFECT, {}))
        extra: Dict[str, Any] = {"singular_task_interference": sum(interference)} if interference else {}
        if no_effect:
            extra["tensors_where_delta_cancels"] = len(no_effect)
        combined = sections.get(COMBINED, {})
        if combined:
            extra["combined_by"] = sorted({e["method"] for e in combined.values()})
            extra["combined_tensors"] = len(combined)
        if "averaged" in sections:
            extra["averaged_tensors"] = len(sections["averaged"])
        summary = {
            "scopes": len(scopes),
            # tensors whose merge a solved δ changed: ≥ 2 non-zero task vectors, weights not cancelling δ
            "disentangled_tensors": sum(1 for s in solved for t in s.get("tensors", []) if t not in no_effect),
            "task_arithmetic_tensors": len(passthrough),
            "mean_abs_cos_before": sum(before) / len(before) if before else 0.0,
            "mean_abs_cos_after": sum(after) / len(after) if after else 0.0,
            **extra,
        }
        return MergeReportData(method, parameters, models, summary, sections, passthrough)


@dataclass(frozen=True)
class MergeReportData(JsonResult):
    """A merge's report (``awd_report.json``, ``tsv_report.json``): the method, its resolved
    parameters, the models, the summary, each recorded section and the tensors merged by plain
    task arithmetic.  In JSON the sections are top-level keys."""

    method: str
    parameters: Dict[str, Any]
    models: List[str]
    summary: Dict[str, Any]
    sections: Dict[str, Dict[str, Dict[str, Any]]]
    task_arithmetic_tensors: List[str]

    def to_json(self) -> Dict[str, Any]:
        return {"method": self.method, "parameters": self.parameters, "models": self.models,
                "summary": self.summary, **self.sections, "task_arithmetic_tensors": self.task_arithmetic_tensors}

    def write(self, path: str) -> str:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(self.to_json(), handle, indent=2)
            handle.write("\n")
        return path
