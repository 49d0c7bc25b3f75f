"""Which committed files hold the MiniLM track's rows (standard library only: ``benchmarks.readme_tables``,
``benchmarks.index`` and ``benchmarks.quality.tune_check`` read them without torch).

Layout 2 (``"layout": 2`` in quality.json): every row of the track in ``quality.json``, written by one
``python -m benchmarks.quality.run`` at one code state (``settings.merge_code``, ``settings.seconds``).
Layout 1 (no ``layout`` field, the file committed before it): quality.json held the first eight rows and
the other rows were in per-grid runs at other code states (``LEGACY_STEMS``, written by the since-removed
``benchmarks.quality.peers``); those files are read only while quality.json is of layout 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Tuple

from benchmarks.common import RESULTS

LAYOUT = 2
CANONICAL = "quality"
LEGACY_STEMS = ("quality_peers", "quality_combine", "quality_ace", "quality_iso_fraction")
# layout 1: where a row is looked up, first match wins (the same fine-tunes and splits; rows shared between
# files agree to 0.3 points); quality_iso_fraction holds no row the README shows
LEGACY_LOOKUP = (CANONICAL, "quality_peers", "quality_combine", "quality_ace")


def is_single_file(results: Mapping[str, Any]) -> bool:
    """Whether a quality.json mapping holds every row of the track (layout 2 or later)."""
    return int(results.get("layout", 1)) >= LAYOUT


def load(stem: str, folder: Path = RESULTS) -> Dict[str, Any]:
    return json.loads((folder / f"{stem}.json").read_text())


def row_files(canonical: Mapping[str, Any]) -> Tuple[str, ...]:
    """The stems to look a row up in, given the committed quality.json: itself alone at layout 2."""
    return (CANONICAL,) if is_single_file(canonical) else LEGACY_LOOKUP


def legacy_present(folder: Path = RESULTS) -> Tuple[str, ...]:
    """The layout-1 per-grid files still committed (removed once quality.json is of layout 2)."""
    return tuple(stem for stem in LEGACY_STEMS if (folder / f"{stem}.json").exists())
