"""What ``mergekit-awd tune`` found (``TuneResult``, its ``TunePoint``s and ``CacheUse``): the data that
``tune`` computes, ``tune_report`` writes and ``presentation.tune_summary`` renders (from ``to_json``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional


@dataclass
class TunePoint:
    """One scored point: its parameters, per-task scores, the overall score and how it was merged."""

    parameters: Dict[str, Any]
    tasks: Dict[str, Dict[str, float]]
    score: float
    merged_at_lambda_one: bool
    reused: bool = False


@dataclass
class CacheUse:
    """What the score cache answered, and why it could: ``reused`` scores came from ``OUT``'s cache
    because every input had the same content digest; ``changed``: inputs whose content differs from
    a cached score of the same point (that score was not used)."""

    reused: int = 0
    scored: int = 0
    changed: List[str] = field(default_factory=list)
    inputs: Dict[str, str] = field(default_factory=dict)  # role → content digest
    code: str = ""


@dataclass
class TuneResult:
    """What a tune found: every point in grid order, the chosen one, and what it cost."""

    method: str
    axes: List[Dict[str, Any]]
    points: List[TunePoint]
    chosen: Dict[str, Any]
    chosen_score: float
    references: Dict[str, float]
    merges: int
    evaluations: int
    seconds: float                  # the whole tune, including a --merge
    merge_seconds: float = 0.0      # the tuning merges (not the --merge)
    evaluation_seconds: float = 0.0  # scoring, references included
    tuned_config: Optional[str] = None
    merged: Optional[str] = None
    files: Dict[str, str] = field(default_factory=dict)
    cache: CacheUse = field(default_factory=CacheUse)
    layerwise: Optional[Dict[str, Any]] = None  # --layerwise: objective, groups, coefficients, scores …

    def to_json(self) -> Dict[str, Any]:
        return asdict(self)


__all__ = ["TunePoint", "CacheUse", "TuneResult"]
