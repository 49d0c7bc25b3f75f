"""What a cached fine-tune was trained from: the inputs fingerprint its done-marker and checkpoint record.

A cache never answers for an input that changed.  The fingerprint (``inputs_fingerprint``) holds

- ``settings``: the training settings (every field of the track's ``FinetuneSettings``);
- ``base_sha256``: sha256 of the base model folder's weight files (``*.safetensors``, else
  ``pytorch_model*.bin``), each file's name, size and bytes in name order (``weights_digest``);
- ``data_sha256``: sha256 of the training examples in order (what the fine-tune learns from: the LLM
  tracks' prompt and answer, MiniLM's text, label and class name), serialised as compact JSON with
  sorted keys, UTF-8 (``data_digest``);
- ``train_examples``: how many there are.

A finished folder's marker records it under ``inputs``; ``marker_verdict`` says why a marker does not
answer for the current fingerprint (``difference``: "other settings", "another base model (its weight
files changed)", "other training data").  Markers written before fingerprints were recorded have no
``inputs``: they are trusted on first use (``benchmarks.harness.finetune.ensure_finetunes`` stamps the
current fingerprint into them and says so), and from then on a change is detected.  Markers are written
atomically (``write_marker``: a temporary file moved over the marker).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

CHUNK_BYTES = 1 << 20
_FIELD_WORDS = (("settings", "other settings"), ("base_sha256", "another base model (its weight files changed)"),
                ("data_sha256", "other training data"))


def settings_dict(settings: Any) -> Dict[str, Any]:
    """The training settings as a plain dict (a dataclass's fields, else the object's attributes).  A field
    added after caches were made (``metadata={"added_later": True}``) is left out while it has its default,
    which is the old behaviour: the caches made before it still answer."""
    if hasattr(settings, "__dataclass_fields__"):
        return {name: getattr(settings, name) for name, spec in settings.__dataclass_fields__.items()
                if not (spec.metadata.get("added_later") and getattr(settings, name) == spec.default)}
    return dict(vars(settings))


def weight_files(folder: Path) -> List[Path]:
    """The files transformers loads a model's weights from: ``*.safetensors``, else ``pytorch_model*.bin``."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder}: no weight files (*.safetensors or pytorch_model*.bin)")
    return files


def weights_digest(folder: Path) -> str:
    """sha256 over the folder's weight files (name, size and bytes of each, in name order)."""
    digest = hashlib.sha256()
    for path in weight_files(folder):
        digest.update(f"{path.name}\0{path.stat().st_size}\0".encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
                digest.update(chunk)
    return digest.hexdigest()


def data_digest(rows: Sequence[Any]) -> str:
    """sha256 of JSON-serialisable training rows, in order (compact JSON, sorted keys, UTF-8)."""
    text = json.dumps(list(rows), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def inputs_fingerprint(settings: Any, base_sha256: str, rows: Sequence[Any]) -> Dict[str, Any]:
    """The fingerprint of a fine-tune of ``settings`` from a base of ``base_sha256`` on ``rows``."""
    return {"settings": settings_dict(settings), "base_sha256": base_sha256, "data_sha256": data_digest(rows),
            "train_examples": len(rows)}


def difference(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> Optional[str]:
    """What differs between two fingerprints, in words ("other training data"); None when they are equal."""
    for field, words in _FIELD_WORDS:
        if recorded.get(field) != current.get(field):
            return words
    return None if dict(recorded) == dict(current) else "other inputs"


def marker_verdict(record: Mapping[str, Any], current: Mapping[str, Any]) -> Optional[str]:
    """Why a cached fine-tune whose marker holds ``record`` does not answer for ``current`` (in words);
    None when it does.  A marker without ``inputs`` (made before they were recorded) answers unless the
    settings it records differ: it is trusted on first use."""
    if "inputs" in record:
        return difference(record["inputs"], current)
    if "settings" in record and record["settings"] != current.get("settings"):
        return "other settings"
    return None


def read_marker(path: Path) -> Dict[str, Any]:
    """A done-marker's record: JSON; an old plain number (MiniLM's seconds) as ``{"seconds": number}``."""
    record = json.loads(path.read_text())
    return record if isinstance(record, dict) else {"seconds": record}


def write_marker(path: Path, record: Mapping[str, Any]) -> None:
    """``record`` as JSON, written beside ``path`` and moved over it (never half written)."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(dict(record), indent=1) + "\n")
    os.replace(partial, path)
