"""The version of the code that computes a merge or a score: what a cache is keyed by, besides its inputs."""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def code_version() -> str:
    """mergekit's version and a hash of mergekit_awd's Python sources (``mergekit-V-mergekit_awd-H``):
    a cached merge or score is reused only while both are unchanged.  Computed once per process (the
    sources of a running process do not change under it)."""
    from importlib.metadata import version

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for file in sorted(root.rglob("*.py")):
        digest.update(str(file.relative_to(root)).encode())
        digest.update(file.read_bytes())
    return f"mergekit-{version('mergekit')}-mergekit_awd-{digest.hexdigest()[:12]}"


__all__ = ["code_version"]
