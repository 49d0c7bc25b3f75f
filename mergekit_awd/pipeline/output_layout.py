"""What a finished merge output folder looks like: its files, its weights and its completion marker.

``run_merge`` writes ``COMPLETION_MARKER`` as its very last step, so a folder without it is an
interrupted or still-running merge.  The marker records the digest (XXH3-128) and size of every
file the merge wrote; ``check_finished_output`` (what ``mergekit-awd upload`` runs before sending
anything) refuses a folder whose content is not exactly that.

Marker (JSON, ``format`` 2)::

    {"format": 2, "merge_method": "awd", ...the info run_merge passes...,
     "weights": {"model.safetensors": 268435456},                       # name -> size (kept for
                                                                        #  older readers)
     "files": {"README.md": {"xxh3_128": "9f…", "size": 1234},
               "model.safetensors": {"xxh3_128": "1c…", "size": 268435456}, ...}}

The digest is XXH3-128 (``xxhash``), not SHA-256: it detects any accidental or deliberate edit of a
file just as well (the marker is not signed, so whoever can edit the weights can also rewrite
the marker: a cryptographic hash would add no protection), and it runs at memory speed
(``benchmarks/speed/bench_digest_cost.py``: about 10x faster than SHA-256 here), so the marker costs a
merge a few per cent at most.

Paths are relative to the folder, with ``/``.  The marker itself, and everything inside a
``.git`` or ``.cache`` folder (or a ``.git`` file), is neither recorded, checked nor uploaded.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Tuple

import xxhash

from mergekit_awd.constants import CARD_FILENAME, COMPLETION_MARKER
from mergekit_awd.errors import IncompleteOutputError, ModelFileError
from mergekit_awd.pipeline import model_files

MARKER_FORMAT = 2

# Path components that are never part of a merge output (a git checkout, a download cache).
SKIPPED_NAMES: Tuple[str, ...] = (".git", ".cache")
# Files the user may edit, add or remove after the merge: their digest is not enforced.
EDITABLE_FILES: Tuple[str, ...] = (CARD_FILENAME,)

DIGEST_NAME = "xxh3_128"  # the marker's key for a file's digest
DIGEST_CHUNK_BYTES = 4 * 1024 * 1024
_DIGEST_HEX = re.compile(r"^[0-9a-f]{32}$")
_LISTED = 10  # names quoted in one message; the rest are counted



@dataclass(frozen=True)
class FinishedOutput:
    """A checked output folder: its weight files, the marker's content, and the files to publish.

    ``files``: every file of the folder (relative paths with ``/``, sorted), the marker excluded;
    each was recorded by the merge and is unchanged, except an editable ``README.md``.
    ``sizes``: their sizes in bytes, in the same order.
    """

    path: str
    weight_files: Tuple[str, ...]
    marker: Dict[str, Any]
    files: Tuple[str, ...] = ()
    sizes: Tuple[int, ...] = field(default=())

    @property
    def total_size(self) -> int:
        return sum(self.sizes)


def _listing(names: List[str]) -> str:
    shown = ", ".join(names[:_LISTED])
    return shown if len(names) <= _LISTED else f"{shown} and {len(names) - _LISTED} more"


def is_skipped(relative: str) -> bool:
    """True for paths inside ``.git``/``.cache`` (any depth), never recorded or uploaded."""
    return any(part in SKIPPED_NAMES for part in relative.split("/"))


def upload_ignore_patterns() -> List[str]:
    """``upload_folder`` ignore patterns matching what ``is_skipped`` leaves out, plus the marker
    (huggingface_hub's ``*`` matches across ``/``)."""
    patterns = [COMPLETION_MARKER]
    for name in SKIPPED_NAMES:
        patterns += [name, f"{name}/*", f"*/{name}", f"*/{name}/*"]
    return patterns


def folder_files(out_dir: str) -> List[str]:
    """Every file of ``out_dir`` (relative, ``/``-separated, sorted), the marker and skipped folders
    excluded.  A symbolic link (to a file or a folder) or anything that is not a regular file is
    refused with an ``IncompleteOutputError`` naming it: publishing it would send what it points to.
    """
    found: List[str] = []
    refused: List[str] = []
    for root, dirs, names in os.walk(out_dir):
        kept_dirs = []
        for name in sorted(dirs):
            path = os.path.join(root, name)
            relative = os.path.relpath(path, out_dir).replace(os.sep, "/")
            if is_skipped(relative):
                continue
            if os.path.islink(path):
                refused.append(relative)
            else:
                kept_dirs.append(name)
        dirs[:] = kept_dirs
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, out_dir).replace(os.sep, "/")
            if relative == COMPLETION_MARKER or is_skipped(relative):
                continue
            mode = os.lstat(path).st_mode
            if not stat.S_ISREG(mode):
                refused.append(relative)
            else:
                found.append(relative)
    if refused:
        refused.sort()
        raise IncompleteOutputError(
            f"{out_dir}: {_listing(refused)} is a symbolic link or not a regular file; a merge output "
            "holds only the files the merge wrote (replace a link with a copy of the file, or move "
            "it out of the folder)",
            path=os.path.join(out_dir, refused[0]),
        )
    return sorted(found)


def file_digest(path: str, expected_size: int = -1) -> Tuple[str, int]:
    """(XXH3-128 hex digest, size) of the regular file ``path``, read in chunks of a few MiB.

    The file is opened without following a symbolic link; when ``expected_size`` is given and the
    size differs, the digest is not computed (``""`` is returned with the actual size).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as error:
        raise IncompleteOutputError(f"{path}: cannot be read ({error.strerror or error})", path=path) from None
    with os.fdopen(descriptor, "rb", buffering=0) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IncompleteOutputError(f"{path}: not a regular file", path=path)
        if 0 <= expected_size != info.st_size:
            return "", info.st_size
        digest = xxhash.xxh3_128()
        buffer = bytearray(DIGEST_CHUNK_BYTES)
        view = memoryview(buffer)
        size = 0
        while True:
            count = handle.readinto(view)
            if not count:
                break
            digest.update(view[:count])
            size += count
    return digest.hexdigest(), size


def weight_files(out_dir: str) -> List[str]:
    """The weight files of ``out_dir`` (the index first when sharded), relative to it, as the one
    shard reader (``model_files.weight_files``) finds them; ``IncompleteOutputError`` when there
    are none or a listed shard is missing."""
    try:
        found = model_files.weight_files(out_dir)
    except ModelFileError as error:
        raise IncompleteOutputError(str(error), path=error.path) from None
    names = [os.path.relpath(path, out_dir).replace(os.sep, "/") for path in found.files]
    return [os.path.basename(found.index), *names] if found.index else names


def write_completion_marker(out_dir: str, info: Dict[str, Any]) -> str:
    """Record that the merge into ``out_dir`` finished: ``info``, the marker ``format``, the XXH3-128 digest
    and size of every file (``files``) and the size of each weight file (``weights``).

    Refuses (``IncompleteOutputError``) a folder without weights or holding a symbolic link.
    """
    weights = weight_files(out_dir)
    files: Dict[str, Dict[str, Any]] = {}
    for name in folder_files(out_dir):
        digest, size = file_digest(os.path.join(out_dir, name))
        files[name] = {DIGEST_NAME: digest, "size": size}
    content = {
        **info,
        "format": MARKER_FORMAT,
        "weights": {name: files[name]["size"] for name in weights},
        "files": files,
    }
    path = os.path.join(out_dir, COMPLETION_MARKER)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(content, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def _recorded_files(marker_path: str, marker: Any) -> Dict[str, Tuple[str, int]]:
    """The marker's ``files`` as name -> (digest, size); refuse an old, hand-written or odd marker."""
    version = marker.get("format") if isinstance(marker, Mapping) else None
    if type(version) is int and version > MARKER_FORMAT:
        raise IncompleteOutputError(
            f"{marker_path}: completion marker format {version} is newer than this mergekit-awd reads "
            f"({MARKER_FORMAT}); upgrade mergekit-awd to publish this folder",
            path=marker_path,
        )
    if version != MARKER_FORMAT or "files" not in marker:
        raise IncompleteOutputError(
            f"{marker_path}: this completion marker records no file digests (written by an older "
            "mergekit-awd, or not by mergekit-awd), so the folder's content cannot be checked; "
            "re-run the merge to publish it",
            path=marker_path,
        )
    files = marker["files"]
    recorded: Dict[str, Tuple[str, int]] = {}
    problem = None if isinstance(files, Mapping) else "'files' is not a mapping"
    for name, entry in (files.items() if problem is None else ()):
        parts = name.split("/") if isinstance(name, str) else []
        if not parts or any(part in ("", ".", "..") for part in parts) or "\\" in name or name == COMPLETION_MARKER:
            problem = f"{name!r} is not a path inside the folder"
        elif not (isinstance(entry, Mapping) and isinstance(entry.get(DIGEST_NAME), str)
                  and _DIGEST_HEX.match(entry[DIGEST_NAME]) and type(entry.get("size")) is int
                  and entry["size"] >= 0):
            problem = f"{name!r} has no {DIGEST_NAME} digest and size"
        if problem:
            break
        recorded[name] = (entry[DIGEST_NAME], entry["size"])
    if problem:
        raise IncompleteOutputError(
            f"{marker_path}: not a valid completion marker ({problem}); re-run the merge", path=marker_path
        )
    return recorded


def _read_marker(out_dir: str, marker_path: str) -> Dict[str, Any]:
    """The completion marker of ``out_dir``: a regular file holding JSON."""
    if not os.path.isdir(out_dir):
        raise IncompleteOutputError(f"{out_dir}: not a directory", path=out_dir)
    if os.path.islink(marker_path):
        raise IncompleteOutputError(
            f"{marker_path}: is a symbolic link, not the marker the merge wrote; re-run the merge",
            path=marker_path,
        )
    if not os.path.isfile(marker_path):
        raise IncompleteOutputError(
            f"{out_dir}: no {COMPLETION_MARKER}; the merge into this folder did not finish "
            "(or it was not written by mergekit-awd)",
            path=out_dir,
        )
    try:
        with open(marker_path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as error:
        raise IncompleteOutputError(f"{marker_path}: not a readable completion marker ({error})",
                                    path=marker_path) from None


def _check_recorded_files(out_dir: str, recorded: Dict[str, Tuple[str, int]], present: set) -> Dict[str, int]:
    """Every file the marker records (but the editable ones) is there with its size and digest;
    their sizes by name."""
    sizes: Dict[str, int] = {}
    for name, (recorded_digest, size) in sorted(recorded.items()):
        if name in EDITABLE_FILES:
            continue
        path = os.path.join(out_dir, name)
        if name not in present:
            raise IncompleteOutputError(
                f"{path}: missing or changed since the merge finished (expected {size} bytes)", path=path
            )
        digest, actual = file_digest(path, expected_size=size)
        if actual != size:
            raise IncompleteOutputError(
                f"{path}: changed since the merge finished ({actual} bytes, the merge wrote {size})", path=path
            )
        if digest != recorded_digest:
            raise IncompleteOutputError(
                f"{path}: changed since the merge finished (same size, different content: its digest "
                "differs from the one recorded by the merge)",
                path=path,
            )
        sizes[name] = size
    return sizes


def check_finished_output(out_dir: str) -> FinishedOutput:
    """Refuse a folder that is not exactly what a finished merge wrote (``IncompleteOutputError``).

    Rules, in order:

    * ``out_dir`` is a folder holding ``COMPLETION_MARKER`` in the current format (one with file
      digests); an older or hand-written marker is refused: re-run the merge.
    * no symbolic link (to a file or a folder) and nothing but regular files anywhere in it;
    * the model weights are there (a single file, or an index and every shard it lists);
    * every file the marker records exists with the recorded size and digest, else it "changed
      since the merge finished";
    * the weight files are among the recorded files;
    * no file the merge did not write (present but not recorded): move them out of the folder
      or re-run the merge.

    Exception: ``README.md`` (the model card) may be edited, added or removed before publishing;
    its digest is not enforced (it must still be a regular file, not a link).  ``.git`` and
    ``.cache`` folders are ignored, as ``upload`` does not send them.
    """
    marker_path = os.path.join(out_dir, COMPLETION_MARKER)
    marker = _read_marker(out_dir, marker_path)
    recorded = _recorded_files(marker_path, marker)
    present = folder_files(out_dir)
    weights = weight_files(out_dir)
    present_set = set(present)
    sizes = _check_recorded_files(out_dir, recorded, present_set)
    unrecorded_weights = [name for name in weights if name not in recorded]
    if unrecorded_weights:
        raise IncompleteOutputError(
            f"{out_dir}: the weight file(s) {_listing(unrecorded_weights)} were not written by the merge "
            f"that wrote {COMPLETION_MARKER}; re-run the merge",
            path=os.path.join(out_dir, unrecorded_weights[0]),
        )
    extra = [name for name in present if name not in recorded and name not in EDITABLE_FILES]
    if extra:
        raise IncompleteOutputError(
            f"{out_dir}: {len(extra)} file(s) not written by the merge: {_listing(extra)}; move them out "
            "of the folder or re-run the merge",
            path=os.path.join(out_dir, extra[0]),
        )
    for name in EDITABLE_FILES:
        if name in present_set:
            sizes[name] = os.path.getsize(os.path.join(out_dir, name))
    files = tuple(sorted(sizes))
    return FinishedOutput(path=out_dir, weight_files=tuple(weights), marker=dict(marker),
                          files=files, sizes=tuple(sizes[name] for name in files))
