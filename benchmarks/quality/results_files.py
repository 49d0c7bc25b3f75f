"""The MiniLM track's committed results file (standard library only: ``benchmarks.readme_tables``,
``benchmarks.index`` and ``benchmarks.quality.tune_check`` read it without torch).

Every row of the track is in ``quality.json`` (``"layout": 2``), written by one
``python -m benchmarks.quality.run`` at one code state (``settings.merge_code``, ``settings.seconds``).
The layout before it (no ``layout`` field: the first rows in quality.json, the others in per-grid files at
other code states) was retired with its files; they are in git history before the single run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping

from benchmarks.common import RESULTS

LAYOUT = 2
CANONICAL = "quality"


def is_single_file(results: Mapping[str, Any]) -> bool:
    """Whether a quality.json mapping holds every row of the track (layout 2 or later)."""
    return int(results.get("layout", 1)) >= LAYOUT


def load(stem: str = CANONICAL, folder: Path = RESULTS) -> Dict[str, Any]:
    return json.loads((folder / f"{stem}.json").read_text())
