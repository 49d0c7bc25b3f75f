"""benchmarks/INDEX.md lists every benchmark command and is what ``python -m benchmarks.index`` writes;
every committed results file belongs to a listed command; no block of code is written twice under
benchmarks/ (the tracks share ``benchmarks.harness`` instead)."""

from __future__ import annotations

import fnmatch
import sys
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Tuple

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.index import COMMANDS, INDEX, RESULTS, command_modules, render  # noqa: E402

MIN_DUPLICATE_LINES = 6


def test_every_command_module_is_in_the_index():
    listed = {c.module for c in COMMANDS if not c.module.endswith(".sh")}
    found = set(command_modules())
    assert found - listed == set(), "command modules missing from benchmarks.index.COMMANDS"
    assert listed - found == set(), "benchmarks.index.COMMANDS lists modules that are not commands"
    assert all((REPO_ROOT / c.module).is_file() for c in COMMANDS if c.module.endswith(".sh"))


def test_committed_index_is_what_the_generator_writes():
    assert INDEX.read_text() == render(), "benchmarks/INDEX.md is out of date: run python -m benchmarks.index"


def test_every_results_file_belongs_to_a_listed_command():
    patterns = [name.rstrip("/") for c in COMMANDS for name in c.results if "/" not in name.rstrip("/")]
    orphans = [p.name for p in RESULTS.iterdir() if not any(fnmatch.fnmatch(p.name, pat) for pat in patterns)]
    assert orphans == []


def normalized_lines(path: Path) -> List[Tuple[int, str]]:
    """(line number, stripped text) of the lines that carry code: blank lines, comments and import
    statements left out (two modules importing the same names share no logic)."""
    lines = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#") or text.startswith("import ") or (
                text.startswith("from ") and " import " in text):
            continue
        lines.append((number, text))
    return lines


def duplicate_blocks(root: Path, size: int = MIN_DUPLICATE_LINES) -> List[str]:
    """Places where ``size`` consecutive normalized lines occur more than once under ``root``."""
    seen: Dict[Tuple[str, ...], List[str]] = defaultdict(list)
    for path in sorted(root.rglob("*.py")):
        if ".cache" in path.parts:
            continue
        lines = normalized_lines(path)
        for start in range(len(lines) - size + 1):
            window = tuple(text for _, text in lines[start:start + size])
            seen[window].append(f"{path.relative_to(root.parent)}:{lines[start][0]}")
    return sorted(" = ".join(places) for places in seen.values() if len(places) > 1)


def test_no_block_of_code_is_written_twice_under_benchmarks():
    assert duplicate_blocks(REPO_ROOT / "benchmarks") == []
