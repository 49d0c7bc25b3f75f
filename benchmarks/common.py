"""What every benchmark shares: where it writes its results and keeps its cache (``CACHE``:
``~/.cache/mergekit-awd/benchmarks``, or ``$MERGEKIT_AWD_BENCH_CACHE``), and how it writes
a results pair (``RESULTS/name.json`` and ``RESULTS/name.md``).

Run every benchmark from the repository root as a module (``python -m benchmarks.<package>.<name>``;
benchmarks/INDEX.md lists them).  Only the standard library is imported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"   # committed results
# built models, fine-tunes, merge outputs and scored points: outside the work tree, so that a fresh checkout
# of the repository on the same machine finds the hours of fine-tuning it holds (MERGEKIT_AWD_BENCH_CACHE moves it)
CACHE_ENV = "MERGEKIT_AWD_BENCH_CACHE"
CACHE = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mergekit-awd" / "benchmarks").expanduser()


def save_results(name: str, results: Mapping[str, Any], lines: Sequence[str]) -> None:
    """Write RESULTS/name.json (``results``) and RESULTS/name.md (``lines``), and print the lines."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))
