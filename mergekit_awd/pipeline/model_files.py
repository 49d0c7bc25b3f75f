"""The one reader of model-folder metadata: config.json, weight indexes, safetensors headers,
pickled ``.bin`` weights and LoRA adapter folders.

Every check reads metadata only (JSON files, the safetensors header, the pickle's structure) and
never a tensor's data.  Anything unreadable becomes one ``ModelFileError`` whose ``path`` is the
damaged file and whose message names it and says what is wrong ("truncated: N bytes, header
says M", "not a JSON object", …).  Pickled weights are opened only through torch's
``weights_only`` unpickler, which refuses (never runs) anything but tensors and plain containers.

The folder layout follows mergekit's ``ShardedTensorIndex.from_disk``: ``model.safetensors`` or
its ``.index.json`` first, then ``pytorch_model.bin`` or its ``.index.json``; with an index, only
the tensors its ``weight_map`` lists exist for mergekit.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from mergekit_awd.constants import (
    ADAPTER_CONFIG,
    ADAPTER_PICKLE_WEIGHTS,
    ADAPTER_WEIGHTS,
    INDEX_SUFFIX,
    MODEL_CONFIG,
    PICKLE_WEIGHTS,
    SAFETENSORS_WEIGHTS,
)
from mergekit_awd.errors import ModelFileError

ADAPTER_WEIGHT_NAMES = (ADAPTER_WEIGHTS, ADAPTER_PICKLE_WEIGHTS)

# safetensors refuses headers above 100 MB (MAX_HEADER_SIZE in the Rust crate).
MAX_HEADER_BYTES = 100_000_000
# Bits per element of every dtype the safetensors library (0.8) accepts; others it refuses.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
_LFS_POINTER = b"version https://git-lfs"

Shape = Tuple[int, ...]


# --------------------------------------------------------------------------- JSON files


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})", path=path) from None


def read_json_object(path: str, what: str = "file") -> Dict[str, Any]:
    """The JSON object in ``path``; ModelFileError when it is missing, unreadable, not JSON or not an object."""
    if not os.path.exists(path):
        raise ModelFileError(f"{path}: {what} is missing", path=path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: {what} is not a file", path=path)
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as error:
        raise ModelFileError(f"{path}: {what} cannot be read ({error.strerror or error})", path=path) from None
    if raw.startswith(_LFS_POINTER):
        raise ModelFileError(f"{path}: {what} is a Git LFS pointer, not the file (run `git lfs pull`)", path=path)
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: {what} is not UTF-8 text", path=path) from None
    except ValueError as error:
        raise ModelFileError(f"{path}: {what} is not valid JSON ({error})", path=path) from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: {what} is not a JSON object (found a JSON {_json_kind(value)})", path=path)
    return value


def _json_kind(value: Any) -> str:
    return {list: "list", str: "string", bool: "boolean", int: "number", float: "number"}.get(type(value), "null")


def read_config_json(folder: str) -> Dict[str, Any]:
    """``folder/config.json`` as a dict (missing, unreadable, not JSON, not an object → ModelFileError)."""
    return read_json_object(os.path.join(folder, MODEL_CONFIG), "model config")


def read_architectures(folder: str, config: Optional[Dict[str, Any]] = None) -> List[str]:
    """``architectures`` of ``folder/config.json``: [] when absent; ModelFileError when not a list of names."""
    config = read_config_json(folder) if config is None else config
    value = config.get("architectures")
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(name, str) for name in value):
        path = os.path.join(folder, MODEL_CONFIG)
        raise ModelFileError(f"{path}: \"architectures\" is {value!r}, not a list of class names", path=path)
    return list(value)


# --------------------------------------------------------------------------- weight files


@dataclass(frozen=True)
class WeightFiles:
    """The weight files of a model folder, as mergekit will find them."""

    folder: str
    format: str  # "safetensors" or "pickle"
    files: Tuple[str, ...]  # full paths, each once, sorted
    index: Optional[str] = None  # the index file's full path, when sharded
    weight_map: Optional[Dict[str, str]] = None  # tensor name → shard file name, from the index


def weight_files(folder: str, names: Sequence[str] = (SAFETENSORS_WEIGHTS, PICKLE_WEIGHTS)) -> WeightFiles:
    """The weight files of ``folder``: a single file or the shards an index lists.

    ``names`` are the candidates in mergekit's order (each also as ``NAME.index.json``).  An index
    must be a JSON object with a ``weight_map`` object of tensor name → shard file name, and every
    shard it lists must be a file in ``folder``; otherwise ModelFileError naming the index.
    """
    for name in names:
        single = os.path.join(folder, name)
        index = single + INDEX_SUFFIX
        if not (os.path.exists(single) or os.path.exists(index)):
            continue
        kind = "safetensors" if name.endswith(".safetensors") else "pickle"
        if os.path.exists(index):  # mergekit prefers the index when both exist
            weight_map = _read_weight_map(index)
            shards = []
            for shard in sorted(set(weight_map.values())):
                path = os.path.join(folder, shard)
                if not os.path.isfile(path):
                    raise ModelFileError(f"{index}: lists shard {shard!r}, which is missing from {folder}", path=index)
                shards.append(path)
            return WeightFiles(folder, kind, tuple(shards), index, weight_map)
        if not os.path.isfile(single):
            raise ModelFileError(f"{single}: is not a file", path=single)
        return WeightFiles(folder, kind, (single,))
    wanted = ", ".join(n + s for n in names for s in ("", INDEX_SUFFIX))
    raise ModelFileError(f"{folder}: no model weights found (looked for {wanted})", path=folder)


def _read_weight_map(index: str) -> Dict[str, str]:
    data = read_json_object(index, "weight index")
    if "weight_map" not in data:
        raise ModelFileError(f"{index}: weight index has no \"weight_map\"", path=index)
    weight_map = data["weight_map"]
    if not isinstance(weight_map, dict):
        raise ModelFileError(
            f"{index}: \"weight_map\" is a JSON {_json_kind(weight_map)}, not an object of tensor name → shard file",
            path=index,
        )
    if not weight_map:
        raise ModelFileError(f"{index}: \"weight_map\" lists no tensor", path=index)
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or not shard:
            raise ModelFileError(f"{index}: \"weight_map\" entry {name!r} is {shard!r}, not a shard file name", path=index)
        if os.path.isabs(shard) or os.path.normpath(shard).split(os.sep)[0] == os.pardir:
            raise ModelFileError(f"{index}: shard {shard!r} (for {name!r}) is not a file inside the model folder",
                                 path=index)
    return weight_map


# --------------------------------------------------------------------------- safetensors


def read_safetensors_header(path: str) -> Dict[str, Tuple[str, Shape]]:
    """name → (dtype, shape) from the header of a safetensors file; the data itself is not read.

    Checks what the safetensors library checks when it opens the file: the header length and
    JSON, every entry's dtype, shape and offsets, the tensors tiling the data area without gaps
    or overlaps, and the file size (8 + header length + the last tensor's end).
    """
    size = _file_size(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if head == _LFS_POINTER[:8] and head + handle.read(len(_LFS_POINTER) - 8) == _LFS_POINTER:
                raise ModelFileError(f"{path}: is a Git LFS pointer, not the weights (run `git lfs pull`)", path=path)
            if len(head) < 8:
                raise ModelFileError(f"{path}: truncated: {size} bytes, shorter than the 8-byte header length",
                                     path=path)
            (header_len,) = struct.unpack("<Q", head)
            if header_len > MAX_HEADER_BYTES:
                raise ModelFileError(f"{path}: not a safetensors file (header length {header_len} bytes is over "
                                     f"the {MAX_HEADER_BYTES}-byte limit)", path=path)
            if 8 + header_len > size:
                raise ModelFileError(f"{path}: truncated: {size} bytes, header says at least {8 + header_len} "
                                     f"(header length {header_len})", path=path)
            handle.seek(8)
            raw = handle.read(header_len)
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})", path=path) from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise ModelFileError(f"{path}: safetensors header is not valid JSON ({error})", path=path) from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: safetensors header is not a JSON object", path=path)
    tensors: Dict[str, Tuple[str, Shape]] = {}
    spans: List[Tuple[int, int, str]] = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise ModelFileError(f"{path}: safetensors \"__metadata__\" is not an object of strings", path=path)
            continue
        dtype, shape, begin, end = _header_entry(path, name, entry)
        bits = DTYPE_BITS[dtype]
        count = 1
        for dim in shape:
            count *= dim
        if (count * bits) % 8 or end - begin != count * bits // 8:
            raise ModelFileError(f"{path}: tensor {name!r} ({dtype} {list(shape)}) needs {count * bits / 8:g} bytes, "
                                 f"its offsets [{begin}, {end}] give {end - begin}", path=path)
        tensors[name] = (dtype, shape)
        spans.append((begin, end, name))
    position = 0
    for begin, end, name in sorted(spans):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else f"leaves a gap after byte {position}"
            raise ModelFileError(f"{path}: tensor {name!r} at offsets [{begin}, {end}] {what}", path=path)
        position = end
    expected = 8 + header_len + position
    if size < expected:
        raise ModelFileError(f"{path}: truncated: {size} bytes, header says {expected}", path=path)
    if size > expected:
        raise ModelFileError(f"{path}: {size} bytes, header says {expected} (data after the last tensor)", path=path)
    return tensors


def _header_entry(path: str, name: str, entry: Any) -> Tuple[str, Shape, int, int]:
    def bad(what: str) -> ModelFileError:
        return ModelFileError(f"{path}: safetensors header entry {name!r} {what}", path=path)

    if not isinstance(entry, dict):
        raise bad("is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in DTYPE_BITS:
        raise bad(f"has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise bad(f"has shape {shape!r}, not a list of sizes")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
            or offsets[1] < offsets[0]):
        raise bad(f"has data_offsets {offsets!r}, not [begin, end]")
    return dtype, tuple(shape), offsets[0], offsets[1]


def safetensors_shapes(files: WeightFiles) -> Dict[str, Shape]:
    """name → shape over the safetensors files of a folder (headers only).

    With an index, the names are the index's and each must be in the shard it names.
    """
    headers = {path: read_safetensors_header(path) for path in files.files}
    if files.weight_map is None:
        return {name: shape for header in headers.values() for name, (_dtype, shape) in header.items()}
    shapes: Dict[str, Shape] = {}
    for name, shard in files.weight_map.items():
        entry = headers[os.path.join(files.folder, shard)].get(name)
        if entry is None:
            raise ModelFileError(f"{files.index}: lists tensor {name!r} in shard {shard!r}, which does not contain it",
                                 path=files.index or files.folder)
        shapes[name] = entry[1]
    return shapes


# --------------------------------------------------------------------------- pickled weights


def check_pickle_file(path: str) -> List[str]:
    """The tensor names of a pickled weights file (``pytorch_model.bin``); no tensor data is read.

    The file must be a zip archive as ``torch.save`` writes it, or a legacy torch pickle, holding
    a dict (or ``{"state_dict": dict}``) of name → tensor.  It is opened only with torch's
    ``weights_only`` unpickler (memory-mapped zip, or tensors on the meta device), which refuses
    any other global, so no pickled code ever runs.  Anything else → ModelFileError naming it.
    """
    import torch

    size = _file_size(path)
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(_LFS_POINTER))
    except OSError as error:
        raise ModelFileError(f"{path}: cannot be read ({error.strerror or error})", path=path) from None
    if head == _LFS_POINTER:
        raise ModelFileError(f"{path}: is a Git LFS pointer, not the weights (run `git lfs pull`)", path=path)
    if size == 0:
        raise ModelFileError(f"{path}: is empty", path=path)
    is_zip = head.startswith(b"PK\x03\x04")  # what torch.save writes; anything else is read as a legacy pickle
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Detected pickle protocol 4 …": the error below says it better
            if is_zip:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            else:
                state = torch.load(path, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("\n")
        detail = next((line.strip() for line in reason if "Unsupported global" in line or "Unsupported operand" in line),
                      reason[0].strip()).split(" Please use ")[0]
        raise ModelFileError(f"{path}: not a checkpoint torch's weights-only loader accepts (tensors and plain "
                             f"containers only); refused without running any of it (torch: {shorten(detail)})",
                             path=path) from None
    except Exception as error:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError, …
        what = "torch zip archive" if is_zip else "torch pickle"
        raise ModelFileError(f"{path}: unreadable {what} ({type(error).__name__}: {shorten(str(error))})",
                             path=path) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, not a dict of name → tensor", path=path)
    return [name for name, value in state.items() if isinstance(value, torch.Tensor)]


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + " …"


def check_weight_files(files: WeightFiles) -> Optional[Dict[str, Shape]]:
    """Check every weight file; name → shape for safetensors, None for pickled weights."""
    if files.format == "safetensors":
        return safetensors_shapes(files)
    for path in files.files:
        names = set(check_pickle_file(path))
        if files.weight_map is not None:
            shard = os.path.basename(path)
            missing = sorted(n for n, s in files.weight_map.items() if s == shard and n not in names)
            if missing:
                raise ModelFileError(f"{files.index}: lists tensor {missing[0]!r} in shard {shard!r}, which does not "
                                     "contain it", path=files.index or path)
    return None


# --------------------------------------------------------------------------- folders


@dataclass(frozen=True)
class ModelFolder:
    """What the checks of a model folder found."""

    path: str
    config: Dict[str, Any]
    architectures: List[str]
    weights: WeightFiles
    shapes: Optional[Dict[str, Shape]]  # from the safetensors headers; None for pickled weights


def check_model_folder(folder: str) -> ModelFolder:
    """config.json, the weight index and every weight file of a model folder; ModelFileError naming
    the first damaged file."""
    config = read_config_json(folder)
    architectures = read_architectures(folder, config)
    files = weight_files(folder)
    return ModelFolder(folder, config, architectures, files, check_weight_files(files))


@dataclass(frozen=True)
class LoraFolder:
    """What the checks of a PEFT adapter folder found."""

    path: str
    config: Dict[str, Any]
    weights: str  # full path of adapter_model.safetensors (or .bin)
    shapes: Optional[Dict[str, Shape]]


def check_lora_folder(path: str) -> LoraFolder:
    """A PEFT adapter folder: adapter_config.json is an object with a ``peft_type`` name, and
    adapter_model.safetensors (or adapter_model.bin) is present and readable."""
    if not os.path.isdir(path):
        what = "is not a folder" if os.path.exists(path) else "does not exist"
        raise ModelFileError(f"{path}: LoRA adapter folder {what}", path=path)
    config_path = os.path.join(path, ADAPTER_CONFIG)
    config = read_json_object(config_path, "LoRA adapter config")
    peft_type = config.get("peft_type")
    if not isinstance(peft_type, str) or not peft_type:
        raise ModelFileError(f"{config_path}: LoRA adapter config has no \"peft_type\" name (found {peft_type!r})",
                             path=config_path)
    for name in ADAPTER_WEIGHT_NAMES:
        weights = os.path.join(path, name)
        if os.path.exists(weights):
            if name.endswith(".safetensors"):
                shapes = {n: s for n, (_d, s) in read_safetensors_header(weights).items()}
                if not shapes:
                    raise ModelFileError(f"{weights}: LoRA adapter holds no tensor", path=weights)
                return LoraFolder(path, config, weights, shapes)
            if not check_pickle_file(weights):
                raise ModelFileError(f"{weights}: LoRA adapter holds no tensor", path=weights)
            return LoraFolder(path, config, weights, None)
    raise ModelFileError(f"{path}: LoRA adapter folder has no {' or '.join(ADAPTER_WEIGHT_NAMES)}", path=path)


__all__ = [
    "ModelFileError",
    "WeightFiles",
    "ModelFolder",
    "LoraFolder",
    "read_json_object",
    "read_config_json",
    "read_architectures",
    "weight_files",
    "read_safetensors_header",
    "safetensors_shapes",
    "check_pickle_file",
    "check_weight_files",
    "check_model_folder",
    "check_lora_folder",
    "shorten",
]
