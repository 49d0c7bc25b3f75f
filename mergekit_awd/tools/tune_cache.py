"""The score cache of ``mergekit-awd tune``: content-addressed, so it never answers for an input that changed.

A cached point (or reference score) is keyed by everything its score depends on:

* the **content** of every file the scored model was built from: each model folder's weight files
  (the ones the loader reads: the safetensors shards, else the pickle ones) and every other regular
  file at its top level (config, generation config, tokenizer files), for the base model, each
  fine-tune, each LoRA adapter, a ``tokenizer_source`` model and each ``--reference`` model.  The
  digest is XXH3-128 (``pipeline.output_layout.file_digest``, the completion marker's), computed on
  every run: ``benchmarks/speed/bench_tune_identity.py`` measures it on the LLM track's models (the
  numbers are in ``benchmarks/results/tune_identity.md``), a small fraction of one scored point,
  so no size/mtime shortcut is taken and a file rewritten in place with its old size and mtime is
  still seen;
* the data file's digest, the configuration with the point's parameters, the scorer's settings
  (batch size, generation length, device) and the code version (``code_version``).

The cache is ``OUT/tune_points.jsonl``: one JSON object a line, appended and flushed after each
score, each with its key and the digest of each input (so a run can say which input changed when
a cached score is not used).  A line cut by an interruption is skipped and scored again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from mergekit_awd.code_version import code_version
from mergekit_awd.constants import TUNE_POINTS
from mergekit_awd.errors import ModelFileError

# Weight files other than the ones the loader chose are not read (a pytorch_model.bin beside
# model.safetensors, a consolidated checkpoint, a GGUF): they take no part in the identity.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".msgpack", ".onnx", ".npz")


@dataclass(frozen=True)
class InputIdentity:
    """One input of a tune (a model folder or a file): its role, resolved path and content digest."""

    role: str
    path: str
    digest: str                    # over every file's (name, size, XXH3-128)
    files: Tuple[Tuple[str, int, str], ...]


def _read_files(folder: str) -> List[str]:
    """The files of a model or adapter folder that loading it reads (see the module docstring)."""
    from mergekit_awd.pipeline.model_files import ADAPTER_WEIGHT_NAMES, weight_files

    names = sorted(entry.name for entry in os.scandir(folder) if entry.is_file())
    try:
        chosen = {os.path.basename(p) for p in weight_files(folder).files}
    except ModelFileError:  # an adapter folder, or weights the merge itself will refuse
        chosen = {n for n in names if n in ADAPTER_WEIGHT_NAMES}
    return [n for n in names if n in chosen or not n.endswith(WEIGHT_SUFFIXES)]


def identify(role: str, path: str) -> InputIdentity:
    """The content identity of the file or folder ``path`` (symbolic links followed)."""
    from mergekit_awd.pipeline.output_layout import file_digest

    resolved = os.path.realpath(path)
    if os.path.isdir(resolved):
        names = _read_files(resolved)
        files = tuple((name, *file_digest(os.path.join(resolved, name))[::-1]) for name in names)
    else:
        digest, size = file_digest(resolved)
        files = ((os.path.basename(resolved), size, digest),)
    text = json.dumps(files)
    return InputIdentity(role, resolved, hashlib.sha256(text.encode()).hexdigest()[:32], files)


def identify_all(inputs: Iterable[Tuple[str, str]]) -> Dict[str, InputIdentity]:
    """``{role: identity}`` for (role, path) pairs; a path given twice is read once."""
    seen: Dict[str, InputIdentity] = {}
    out: Dict[str, InputIdentity] = {}
    for role, path in inputs:
        resolved = os.path.realpath(path)
        if resolved not in seen:
            seen[resolved] = identify(role, resolved)
        out[role] = InputIdentity(role, resolved, seen[resolved].digest, seen[resolved].files)
    return out


def cache_key(kind: str, identities: Mapping[str, InputIdentity], **parts: Any) -> str:
    """The key of one cached score: ``kind``, the inputs' digests and every other part (JSON)."""
    text = json.dumps({"kind": kind, "inputs": {role: i.digest for role, i in identities.items()},
                       "code": code_version(), **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class PointCache:
    """``OUT/tune_points.jsonl``: scores by key; the file is created when the first score is written."""

    def __init__(self, out_dir: str) -> None:
        self.path = os.path.join(out_dir, TUNE_POINTS)
        self.entries: Dict[str, Dict[str, Any]] = {}
        self._handle = None
        if os.path.isfile(self.path):
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                        self.entries[entry["key"]] = entry
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut by an interruption: that point is scored again

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        return self.entries.get(key)

    def put(self, entry: Dict[str, Any]) -> None:
        """Append ``entry`` (with its ``key``) and flush it to disk."""
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        self._handle.write(json.dumps(entry, default=str) + "\n")
        self._handle.flush()
        self.entries[entry["key"]] = entry

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def changed_inputs(self, match: Mapping[str, Any], identities: Mapping[str, InputIdentity]) -> List[str]:
        """Roles whose digest differs from the one recorded by a cached entry that matches ``match``
        in every other field (why that entry was not used)."""
        changed: List[str] = []
        for entry in self.entries.values():
            if all(entry.get(k) == v for k, v in match.items()):
                recorded = entry.get("inputs") or {}
                changed += [role for role, i in identities.items()
                            if role in recorded and recorded[role] != i.digest and role not in changed]
        return changed


def scored_point_count(out_dir: str) -> int:
    """How many scores ``OUT/tune_points.jsonl`` holds (0 when absent): what an interrupted tune kept."""
    return len(PointCache(out_dir).entries)


def input_digests(identities: Mapping[str, InputIdentity], roles: Sequence[str]) -> Dict[str, str]:
    """``{role: digest}`` for ``roles`` (what a cache entry records)."""
    return {role: identities[role].digest for role in roles}


__all__ = ["InputIdentity", "identify", "identify_all", "cache_key", "PointCache", "scored_point_count",
           "input_digests", "WEIGHT_SUFFIXES"]
