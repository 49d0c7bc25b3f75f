"""What a finished merge output folder looks like: its weight files and its completion marker.

``run_merge`` writes ``COMPLETION_MARKER`` as its very last step, so a folder without it is an
interrupted or still-running merge.  ``check_finished_output`` is what ``mergekit-awd upload``
runs before sending anything.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

from mergekit_awd.errors import IncompleteOutputError

COMPLETION_MARKER = "mergekit_awd_complete.json"

# (single-file name, shard index name) for the formats mergekit writes.
WEIGHT_LAYOUTS: Tuple[Tuple[str, str], ...] = (
    ("model.safetensors", "model.safetensors.index.json"),
    ("pytorch_model.bin", "pytorch_model.bin.index.json"),
)


@dataclass(frozen=True)
class FinishedOutput:
    """A checked output folder: its weight files (relative paths) and the marker's content."""

    path: str
    weight_files: Tuple[str, ...]
    marker: Dict[str, Any]


def _shards_from_index(out_dir: str, index_name: str) -> List[str]:
    index_path = os.path.join(out_dir, index_name)
    try:
        with open(index_path, encoding="utf-8") as handle:
            weight_map = json.load(handle)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IncompleteOutputError(f"{index_path}: not a readable shard index ({error})") from None
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if not os.path.isfile(os.path.join(out_dir, s))]
    if missing:
        raise IncompleteOutputError(
            f"{out_dir}: shard(s) {', '.join(missing)} listed in {index_name} are missing"
        )
    return [index_name, *shards]


def weight_files(out_dir: str) -> List[str]:
    """The weight files of ``out_dir`` (the index first when sharded); error when there are none."""
    for single, index in WEIGHT_LAYOUTS:
        if os.path.isfile(os.path.join(out_dir, index)):
            return _shards_from_index(out_dir, index)
        if os.path.isfile(os.path.join(out_dir, single)):
            return [single]
    expected = " or ".join(f"{single} / {index}" for single, index in WEIGHT_LAYOUTS)
    raise IncompleteOutputError(f"{out_dir}: no model weights found (expected {expected})")


def write_completion_marker(out_dir: str, info: Dict[str, Any]) -> str:
    """Record that the merge into ``out_dir`` finished: ``info`` plus the size of each weight file."""
    files = weight_files(out_dir)
    content = {
        **info,
        "weights": {name: os.path.getsize(os.path.join(out_dir, name)) for name in files},
    }
    path = os.path.join(out_dir, COMPLETION_MARKER)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def check_finished_output(out_dir: str) -> FinishedOutput:
    """Refuse a folder that is missing, unfinished (no marker) or whose weights changed since."""
    if not os.path.isdir(out_dir):
        raise IncompleteOutputError(f"{out_dir}: not a directory")
    marker_path = os.path.join(out_dir, COMPLETION_MARKER)
    if not os.path.isfile(marker_path):
        raise IncompleteOutputError(
            f"{out_dir}: no {COMPLETION_MARKER}; the merge into this folder did not finish "
            "(or it was not written by mergekit-awd)"
        )
    try:
        with open(marker_path, encoding="utf-8") as handle:
            marker = json.load(handle)
        recorded = dict(marker["weights"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise IncompleteOutputError(f"{marker_path}: not a readable completion marker ({error})") from None
    files = weight_files(out_dir)
    for name, size in recorded.items():
        path = os.path.join(out_dir, name)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            raise IncompleteOutputError(
                f"{path}: missing or changed since the merge finished (expected {size} bytes)"
            )
    return FinishedOutput(path=out_dir, weight_files=tuple(files), marker=marker)
