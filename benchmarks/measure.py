"""Wall time and peak resident memory of one command-line run, in a fresh process.

    from benchmarks.measure import run_measured
    seconds, peak_mib = run_measured("mergekit_awd.cli", [config, out, "--quiet"])

Peak memory is the child's own VmHWM (read from /proc/self/status at exit).  ru_maxrss from
wait4 is not used: Linux carries the parent's high-water mark across fork and exec, so every
child would report at least the parent's peak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence, Tuple

CHILD = Path(__file__).with_name("_measured_child.py")


def run_measured(module: str, args: Sequence[str], env: dict = None) -> Tuple[float, float]:
    """Run ``python -m module *args`` and return (wall seconds, peak RSS in MiB)."""
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "peak.json"
        command = [sys.executable, str(CHILD), str(result), module, *map(str, args)]
        start = time.perf_counter()
        completed = subprocess.run(command, env={**os.environ, **(env or {})})
        seconds = time.perf_counter() - start
        if completed.returncode != 0:
            raise RuntimeError(f"command failed ({completed.returncode}): {' '.join(command)}")
        return seconds, json.loads(result.read_text())["vm_hwm_kib"] / 1024


def write_merge_config(paths: Sequence[Path], method: str, parameters: dict, dtype: str, path: Path) -> None:
    """``path``: a mergekit YAML merging paths[1:] (weight 1 each) onto the base paths[0] with ``method``."""
    import yaml

    from mergekit_awd.testing.synthetic import merge_config

    config = merge_config(method, paths, parameters, dtype, weights=[1.0] * (len(paths) - 1))
    path.write_text(yaml.safe_dump(config))
