"""Damaged model files: one clear error naming the file, never a traceback, never pickled code run.

Each case copies a tiny model folder, damages the copy, and checks the exact error type, that the
message names the damaged file, that the damaged input is unchanged afterwards (sha256), and,
through the CLI, exit code 1, one ``Error:`` line naming the file and no OUT.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import pickle
import shutil
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest
import torch
import yaml

from mergekit_awd.cli import run
from mergekit_awd.errors import ConfigError, ModelFileError
from mergekit_awd.pipeline.model_files import (
    check_lora_folder,
    check_model_folder,
    check_pickle_file,
    read_config_json,
    read_safetensors_header,
    weight_files,
)
from mergekit_awd.pipeline.read_errors import model_read_errors
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.testing.synthetic import LlamaShape, build_family
from mergekit_awd.pipeline.model_checks import check_models


# --------------------------------------------------------------------------- helpers


def sha256(path: Path) -> Dict[str, str]:
    """sha256 of a file, or of every file under a folder."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(f): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def copy_model(source: Path, tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(source, target)
    return target


def truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep >= 0 else data[:len(data) + keep])


def state_dict(folder: Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def save_index(folder: Path, index: object) -> Path:
    path = folder / "model.safetensors.index.json"
    path.write_text(json.dumps(index))
    return path


def shard_folder(source: Path, target: Path) -> Path:
    """A copy of ``source`` with its weights in two safetensors shards and an index."""
    from safetensors.torch import save_file

    shutil.copytree(source, target)
    state = state_dict(target)
    (target / "model.safetensors").unlink()
    names = sorted(state)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: state[n] for n in part}, str(target / shard), metadata={"format": "pt"})
        weight_map.update({n: shard for n in part})
    save_index(target, {"metadata": {}, "weight_map": weight_map})
    return target


class Touch:
    """Pickles as a call that would create ``marker`` when unpickled by a plain unpickler."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def evil_bin(folder: Path, marker: Path, kind: str) -> Path:
    """Replace the weights of ``folder`` by a pytorch_model.bin that would run code (touch marker)."""
    (folder / "model.safetensors").unlink()
    path = folder / "pytorch_model.bin"
    payload = {"model.embed_tokens.weight": Touch(str(marker))}
    if kind == "pickle":
        with open(path, "wb") as handle:
            pickle.dump(payload, handle)
    else:  # a zip archive as torch.save writes it, with the same payload inside
        torch.save(payload, str(path))
        assert zipfile.is_zipfile(path)
    assert not marker.exists()
    return path


def write_config(tmp_path: Path, base: Path, models: List[str], **extra) -> Path:
    config = {
        "merge_method": "task_arithmetic",
        "base_model": str(base),
        "models": [{"model": m, "parameters": {"weight": 0.5}} for m in models],
        "dtype": "float32",
        **extra,
    }
    path = tmp_path / "merge.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def expect_cli_error(config: Path, out: Path, damaged: Path, capsys, extra: List[str] = ()) -> str:
    capsys.readouterr()
    code = run([str(config), str(out), "--no-copy-tokenizer", "--quiet", *extra])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err.startswith("Error: "), err
    assert str(damaged) in err, f"{damaged} not in {err!r}"
    assert "Traceback" not in err
    assert not out.exists()
    return err


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def vocab_300(tmp_path_factory) -> Path:
    """A tiny LLaMA with vocab_size 300 (the family has 256); every other shape equal."""
    return build_family(tmp_path_factory.mktemp("vocab300"), n_models=1, shape=LlamaShape(vocab_size=300),
                        seed=7)[1]


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> Path:
    """intermediate_size 96 (the family has 128): a mismatch on no vocabulary axis."""
    return build_family(tmp_path_factory.mktemp("wide"), n_models=1, shape=LlamaShape(intermediate_size=96),
                        seed=5, tokenizer=False)[1]


# --------------------------------------------------------------------------- model_files, unit level


def test_header_matches_safetensors(tiny_family):
    from safetensors import safe_open

    path = tiny_family[0] / "model.safetensors"
    header = read_safetensors_header(str(path))
    with safe_open(str(path), "pt") as handle:
        expected = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}
    assert {k: shape for k, (_dtype, shape) in header.items()} == expected
    assert {dtype for dtype, _ in header.values()} == {"F32"}
    folder = check_model_folder(str(tiny_family[0]))
    assert folder.shapes == expected and folder.architectures == ["LlamaForCausalLM"]
    assert folder.weights.format == "safetensors" and folder.weights.index is None


@pytest.mark.parametrize("keep, words", [
    (-1, "truncated: {size} bytes, header says {full}"),
    (-1000, "truncated: {size} bytes, header says {full}"),
    (20, "truncated: 20 bytes, header says at least"),
    (4, "truncated: 4 bytes, shorter than the 8-byte header length"),
    (0, "truncated: 0 bytes"),
])
def test_truncated_safetensors(tiny_family, tmp_path, keep, words):
    folder = copy_model(tiny_family[1], tmp_path, "ft")
    path = folder / "model.safetensors"
    full = path.stat().st_size
    truncate(path, keep)
    before = sha256(path)
    with pytest.raises(ModelFileError) as caught:
        read_safetensors_header(str(path))
    assert type(caught.value) is ModelFileError and caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")
    assert words.format(size=path.stat().st_size, full=full) in str(caught.value)
    with pytest.raises(ModelFileError):
        check_model_folder(str(folder))
    assert sha256(path) == before


def test_safetensors_extra_bytes_and_bad_headers(tiny_family, tmp_path):
    data = (tiny_family[0] / "model.safetensors").read_bytes()
    cases = {
        "extra": (data + b"\0" * 16, "(data after the last tensor)"),
        "huge-header": (struct.pack("<Q", 2 ** 40) + data[8:], "over the 100000000-byte limit"),
        "not-json": (struct.pack("<Q", 8) + b"{notjson" + b"\0" * 8, "header is not valid JSON"),
        "list": (struct.pack("<Q", 8) + b"[1, 2]  ", "header is not a JSON object"),
        "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\nsize 1\n", "Git LFS pointer"),
    }
    header = json.dumps({"t": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    cases["size-mismatch"] = (struct.pack("<Q", len(header)) + header + b"\0" * 12, "needs 16 bytes, its offsets")
    header = json.dumps({"t": {"dtype": "F99", "shape": [4], "data_offsets": [0, 16]}}).encode()
    cases["dtype"] = (struct.pack("<Q", len(header)) + header + b"\0" * 16, "unknown dtype 'F99'")
    header = json.dumps({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                         "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}).encode()
    cases["gap"] = (struct.pack("<Q", len(header)) + header + b"\0" * 12, "leaves a gap after byte 4")
    for name, (content, words) in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(content)
        with pytest.raises(ModelFileError) as caught:
            read_safetensors_header(str(path))
        assert caught.value.path == str(path) and str(path) in str(caught.value)
        assert words in str(caught.value), (name, str(caught.value))


@pytest.mark.parametrize("content, words", [
    (None, "model config is missing"),
    ("{not json", "model config is not valid JSON"),
    ('["LlamaForCausalLM"]', "model config is not a JSON object (found a JSON list)"),
    ('"just a string"', "not a JSON object (found a JSON string)"),
    (b"\xff\xfe{}", "not UTF-8 text"),
])
def test_config_json(tiny_family, tmp_path, content, words):
    folder = copy_model(tiny_family[0], tmp_path, "base")
    path = folder / "config.json"
    if content is None:
        path.unlink()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ModelFileError) as caught:
        read_config_json(str(folder))
    assert type(caught.value) is ModelFileError and caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value), str(caught.value)


def test_architectures_not_a_list(tiny_family, tmp_path):
    folder = copy_model(tiny_family[0], tmp_path, "base")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = "LlamaForCausalLM"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="not a list of class names") as caught:
        check_model_folder(str(folder))
    assert caught.value.path == str(folder / "config.json")


@pytest.mark.parametrize("index, words", [
    ({"metadata": {}}, 'weight index has no "weight_map"'),
    ({"weight_map": ["model-00001-of-00002.safetensors"]}, '"weight_map" is a JSON list, not an object'),
    ({"weight_map": "model.safetensors"}, '"weight_map" is a JSON string'),
    ({"weight_map": {}}, '"weight_map" lists no tensor'),
    ({"weight_map": {"lm_head.weight": 3}}, "'lm_head.weight' is 3, not a shard file name"),
    ({"weight_map": {"lm_head.weight": "../elsewhere.safetensors"}}, "is not a file inside the model folder"),
    ({"weight_map": {"lm_head.weight": "model-00009-of-00009.safetensors"}},
     "lists shard 'model-00009-of-00009.safetensors', which is missing"),
    (["not", "an", "object"], "weight index is not a JSON object (found a JSON list)"),
])
def test_bad_index(tiny_family, tmp_path, index, words):
    folder = shard_folder(tiny_family[1], tmp_path / "sharded")
    check_model_folder(str(folder))  # the intact shards and index are fine
    path = save_index(folder, index)
    before = sha256(folder)
    with pytest.raises(ModelFileError) as caught:
        check_model_folder(str(folder))
    assert type(caught.value) is ModelFileError and caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ") and words in str(caught.value), str(caught.value)
    assert sha256(folder) == before


def test_index_names_tensor_its_shard_lacks(tiny_family, tmp_path):
    folder = shard_folder(tiny_family[1], tmp_path / "sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    name = sorted(index["weight_map"])[0]
    other = sorted(set(index["weight_map"].values()) - {index["weight_map"][name]})[0]
    index["weight_map"][name] = other
    path = save_index(folder, index)
    with pytest.raises(ModelFileError, match=f"lists tensor '{name}' in shard '{other}', which does not contain it"):
        check_model_folder(str(folder))
    assert weight_files(str(folder)).index == str(path)


def test_truncated_shard(tiny_family, tmp_path):
    folder = shard_folder(tiny_family[1], tmp_path / "sharded")
    shard = folder / "model-00002-of-00002.safetensors"
    truncate(shard, -3)
    with pytest.raises(ModelFileError) as caught:
        check_model_folder(str(folder))
    assert caught.value.path == str(shard) and "truncated" in str(caught.value)


def test_no_weights(tiny_family, tmp_path):
    folder = copy_model(tiny_family[1], tmp_path, "ft")
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="no model weights found") as caught:
        check_model_folder(str(folder))
    assert caught.value.path == str(folder)


def test_pickled_weights_are_accepted(tiny_family, tmp_path):
    """torch.save zip and legacy pickles of plain tensors pass; the folder reports no shapes."""
    state = state_dict(tiny_family[1])
    zipped = copy_model(tiny_family[1], tmp_path, "zip")
    (zipped / "model.safetensors").unlink()
    torch.save(state, str(zipped / "pytorch_model.bin"))
    legacy = tmp_path / "legacy.bin"
    torch.save(state, str(legacy), _use_new_zipfile_serialization=False)
    assert sorted(check_pickle_file(str(zipped / "pytorch_model.bin"))) == sorted(state)
    assert sorted(check_pickle_file(str(legacy))) == sorted(state)
    found = check_model_folder(str(zipped))
    assert found.weights.format == "pickle" and found.shapes is None


@pytest.mark.parametrize("kind", ["pickle", "torch-zip"])
def test_malicious_pickle_is_never_run(tiny_family, tmp_path, kind):
    folder = copy_model(tiny_family[1], tmp_path, "evil")
    marker = tmp_path / "pwned"
    path = evil_bin(folder, marker, kind)
    before = sha256(path)
    with pytest.raises(ModelFileError) as caught:
        check_pickle_file(str(path))
    assert caught.value.path == str(path)
    assert "refused without running any of it" in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(ModelFileError):
        check_model_folder(str(folder))
    assert not marker.exists()
    assert sha256(path) == before


@pytest.mark.parametrize("damage, words", [
    ("garbage", "not a checkpoint torch's weights-only loader accepts"),
    ("truncated-zip", "unreadable torch zip archive"),
    ("truncated-legacy", "unexpected EOF"),
    ("empty", "is empty"),
    ("list", "holds a list, not a dict of name → tensor"),
])
def test_corrupt_pickle(tmp_path, damage, words):
    path = tmp_path / "pytorch_model.bin"
    if damage == "garbage":
        path.write_bytes(b"<html>not found</html>" * 10)
    elif damage == "truncated-zip":
        torch.save({"a": torch.zeros(64, 64)}, str(path))
        truncate(path, -200)
    elif damage == "truncated-legacy":
        torch.save({"a": torch.zeros(64, 64)}, str(path), _use_new_zipfile_serialization=False)
        truncate(path, -200)
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        torch.save([torch.zeros(2)], str(path))
    with pytest.raises(ModelFileError) as caught:
        check_pickle_file(str(path))
    assert caught.value.path == str(path) and str(caught.value).startswith(f"{path}: ")
    assert words in str(caught.value), str(caught.value)


def test_lora_folder(lora_adapter, tmp_path):
    found = check_lora_folder(str(lora_adapter))
    assert found.config["peft_type"] == "LORA" and found.shapes
    missing = tmp_path / "nowhere"
    with pytest.raises(ModelFileError, match="LoRA adapter folder does not exist") as caught:
        check_lora_folder(str(missing))
    assert caught.value.path == str(missing)


@pytest.mark.parametrize("damage, file, words", [
    ("config-not-json", "adapter_config.json", "LoRA adapter config is not valid JSON"),
    ("config-list", "adapter_config.json", "not a JSON object (found a JSON list)"),
    ("config-missing", "adapter_config.json", "LoRA adapter config is missing"),
    ("no-peft-type", "adapter_config.json", 'has no "peft_type" name'),
    ("weights-truncated", "adapter_model.safetensors", "truncated: "),
    ("weights-missing", "", "has no adapter_model.safetensors or adapter_model.bin"),
])
def test_corrupt_lora_folder(lora_adapter, tmp_path, damage, file, words):
    adapter = copy_model(lora_adapter, tmp_path, "adapter")
    damage_lora(adapter, damage)
    damaged = adapter / file if file else adapter
    before = sha256(adapter)
    with pytest.raises(ModelFileError) as caught:
        check_lora_folder(str(adapter))
    assert caught.value.path == str(damaged).rstrip("/")
    assert str(caught.value).startswith(f"{str(damaged).rstrip('/')}: ") and words in str(caught.value)
    assert sha256(adapter) == before


def damage_lora(adapter: Path, damage: str) -> None:
    config = adapter / "adapter_config.json"
    if damage == "config-not-json":
        config.write_text('{"peft_type": "LORA", ')
    elif damage == "config-list":
        config.write_text('["LORA"]')
    elif damage == "config-missing":
        config.unlink()
    elif damage == "no-peft-type":
        data = json.loads(config.read_text())
        del data["peft_type"]
        config.write_text(json.dumps(data))
    elif damage == "weights-truncated":
        truncate(adapter / "adapter_model.safetensors", -10)
    elif damage == "weights-missing":
        (adapter / "adapter_model.safetensors").unlink()


# --------------------------------------------------------------------------- load time (mergekit's loaders)


def test_model_read_errors_truncated_after_the_check(tiny_family, tmp_path):
    """A shard truncated after the up-front check fails inside mergekit's loader: one ModelFileError."""
    from mergekit.io import LazyTensorLoader
    from safetensors import SafetensorError

    folder = copy_model(tiny_family[1], tmp_path, "ft")
    loader = LazyTensorLoader.from_disk(str(folder))
    path = folder / "model.safetensors"
    truncate(path, -100)
    name = next(iter(loader.index.tensor_paths))
    with pytest.raises(SafetensorError):  # what mergekit raises, without naming the file
        LazyTensorLoader.from_disk(str(folder)).get_tensor(name)
    with pytest.raises(ModelFileError) as caught:
        with model_read_errors():
            loader.get_tensor(name)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path} (") and "SafetensorError" in str(caught.value)
    assert isinstance(caught.value.__cause__, SafetensorError)


@pytest.mark.parametrize("damage", ["truncated-zip", "garbage"])
def test_model_read_errors_corrupt_bin(tiny_family, tmp_path, damage):
    from mergekit.io import LazyTensorLoader

    folder = copy_model(tiny_family[1], tmp_path, "ft")
    (folder / "model.safetensors").unlink()
    path = folder / "pytorch_model.bin"
    torch.save(state_dict(tiny_family[1]), str(path))
    if damage == "garbage":
        path.write_bytes(b"\x80\x02garbage" * 50)
    else:
        truncate(path, -500)
    with pytest.raises(ModelFileError) as caught:
        with model_read_errors():
            LazyTensorLoader.from_disk(str(folder)).get_tensor("lm_head.weight")
    assert caught.value.path == str(path) and str(caught.value).startswith(f"{path} (")


@pytest.mark.parametrize("damage", ["truncated-safetensors", "truncated-bin"])
def test_model_read_errors_around_mergekit_run_merge(tiny_family, tmp_path, damage):
    """What the runner can wrap: mergekit's own merge, unchecked, on a damaged file."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge as mergekit_run_merge
    from mergekit.options import MergeOptions

    ft = copy_model(tiny_family[2], tmp_path, "ft_1")
    path = ft / "model.safetensors"
    if damage == "truncated-bin":
        torch.save(state_dict(ft), str(ft / "pytorch_model.bin"))
        path.unlink()
        path = ft / "pytorch_model.bin"
    truncate(path, -300)
    config = MergeConfiguration.model_validate(yaml.safe_load(
        write_config(tmp_path, tiny_family[0], [str(tiny_family[1]), str(ft)]).read_text()))
    with pytest.raises(ModelFileError) as caught:
        with model_read_errors():
            mergekit_run_merge(config, str(tmp_path / "OUT"), options=MergeOptions(copy_tokenizer=False, quiet=True))
    assert caught.value.path == str(path) and str(caught.value).startswith(f"{path} (")


def test_model_read_errors_passes_other_errors(tiny_family):
    from mergekit.io import LazyTensorLoader

    loader = LazyTensorLoader.from_disk(str(tiny_family[1]))
    with pytest.raises(KeyError):  # a missing tensor is not a damaged file
        with model_read_errors():
            loader.get_tensor("no.such.tensor")
    with pytest.raises(ZeroDivisionError):
        with model_read_errors():
            1 / 0


# --------------------------------------------------------------------------- through the merge


@dataclass
class Damage:
    id: str
    prepare: Callable[[List[Path], Path, Optional[Path]], "Prepared"]
    error: type = ModelFileError
    words: str = ""
    lora_cache: bool = False


@dataclass
class Prepared:
    base: Path
    models: List[str]
    damaged: Path  # the file (or folder) the message must name
    watched: Path  # what must be unchanged afterwards


def _truncated_ft(family, tmp_path, _lora):
    ft = copy_model(family[2], tmp_path, "ft_1")
    truncate(ft / "model.safetensors", -1000)
    return Prepared(family[0], [str(family[1]), str(ft)], ft / "model.safetensors", ft)


def _index(weight_map):
    def prepare(family, tmp_path, _lora):
        ft = shard_folder(family[2], tmp_path / "ft_1")
        path = save_index(ft, {"metadata": {}} if weight_map is None else {"weight_map": weight_map})
        return Prepared(family[0], [str(family[1]), str(ft)], path, ft)
    return prepare


def _config_list(family, tmp_path, _lora):
    ft = copy_model(family[2], tmp_path, "ft_1")
    (ft / "config.json").write_text('["LlamaForCausalLM"]')
    return Prepared(family[0], [str(family[1]), str(ft)], ft / "config.json", ft)


def _automodel_base(family, tmp_path, _lora):
    base = copy_model(family[0], tmp_path, "base")
    config = json.loads((base / "config.json").read_text())
    config["architectures"] = ["AutoModel"]
    (base / "config.json").write_text(json.dumps(config))
    return Prepared(base, [str(family[1]), str(family[2])], base, base)


def _no_architectures(family, tmp_path, _lora):
    ft = copy_model(family[2], tmp_path, "ft_1")
    config = json.loads((ft / "config.json").read_text())
    del config["architectures"]
    (ft / "config.json").write_text(json.dumps(config))
    return Prepared(family[0], [str(family[1]), str(ft)], ft, ft)


def _missing_lora(family, tmp_path, _lora):
    missing = tmp_path / "no_such_adapter"
    return Prepared(family[0], [f"{family[1]}+{missing}", str(family[2])], missing, family[1])


def _lora(damage, file):
    def prepare(family, tmp_path, lora):
        adapter = copy_model(lora, tmp_path, "adapter")
        damage_lora(adapter, damage)
        return Prepared(family[0], [f"{family[1]}+{adapter}", str(family[2])], adapter / file, adapter)
    return prepare


def _evil(kind):
    def prepare(family, tmp_path, _lora):
        ft = copy_model(family[2], tmp_path, "ft_1")
        path = evil_bin(ft, tmp_path / "pwned", kind)
        return Prepared(family[0], [str(family[1]), str(ft)], path, ft)
    return prepare


DAMAGES = [
    Damage("truncated-safetensors", _truncated_ft, words="truncated: "),
    Damage("index-without-weight-map", _index(None), words='has no "weight_map"'),
    Damage("index-weight-map-list", _index(["model-00001-of-00002.safetensors"]), words='"weight_map" is a JSON list'),
    Damage("config-json-list", _config_list, words="not a JSON object"),
    Damage("automodel-base", _automodel_base, ConfigError, "\"architectures\" is ['AutoModel']"),
    Damage("no-architectures", _no_architectures, ConfigError, '"architectures" is missing'),
    Damage("missing-lora", _missing_lora, ConfigError, "LoRA adapter folder"),
    Damage("missing-lora-with-cache", _missing_lora, ConfigError, "does not exist", lora_cache=True),
    Damage("lora-config-broken", _lora("config-not-json", "adapter_config.json"), words="not valid JSON",
           lora_cache=True),
    Damage("lora-weights-truncated", _lora("weights-truncated", "adapter_model.safetensors"), words="truncated: ",
           lora_cache=True),
    Damage("malicious-pickle", _evil("pickle"), words="refused without running any of it"),
    Damage("malicious-torch-zip", _evil("torch-zip"), words="refused without running any of it"),
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d.id for d in DAMAGES])
def test_merge_refuses_damaged_input(tiny_family, lora_adapter, tmp_path, capsys, damage):
    prepared = damage.prepare(tiny_family, tmp_path, lora_adapter)
    config = write_config(tmp_path, prepared.base, prepared.models)
    before = sha256(prepared.watched)
    cache = tmp_path / "lora_cache"
    extra = ["--lora-merge-cache", str(cache)] if damage.lora_cache else []
    out = tmp_path / "OUT"
    with pytest.raises(damage.error) as caught:
        run_merge(config, out, copy_tokenizer=False, quiet=True,
                  **({"lora_merge_cache": str(cache)} if damage.lora_cache else {}))
    assert type(caught.value) is damage.error
    message = str(caught.value)
    assert str(prepared.damaged) in message and damage.words in message, message
    assert str(config) in message
    if isinstance(caught.value, ModelFileError):
        assert caught.value.path == str(prepared.damaged)
    assert not out.exists()
    err = expect_cli_error(config, out, prepared.damaged, capsys, extra)
    assert damage.words in err
    assert sha256(prepared.watched) == before
    assert not (tmp_path / "pwned").exists()
    assert not cache.exists() or not any(cache.iterdir())  # no half-made LoRA merge left in the cache


def test_inspect_refuses_truncated_safetensors(tiny_family, tmp_path, capsys):
    prepared = _truncated_ft(tiny_family, tmp_path, None)
    config = write_config(tmp_path, prepared.base, prepared.models)
    config.write_text(config.read_text().replace("task_arithmetic", "awd"))
    capsys.readouterr()
    assert run(["inspect", str(config)]) == 1
    err = capsys.readouterr().err
    assert str(prepared.damaged) in err and "truncated: " in err and "Traceback" not in err


def test_pickled_model_merges(tiny_family, tmp_path):
    """A clean pytorch_model.bin passes the check and merges (no false refusal)."""
    ft = copy_model(tiny_family[2], tmp_path, "ft_1")
    torch.save(state_dict(ft), str(ft / "pytorch_model.bin"))
    (ft / "model.safetensors").unlink()
    config = write_config(tmp_path, tiny_family[0], [str(tiny_family[1]), str(ft)])
    run_merge(config, tmp_path / "OUT", copy_tokenizer=False, quiet=True, write_model_card=False)
    assert (tmp_path / "OUT" / "model.safetensors").is_file()


def test_lora_merges(tiny_family, lora_adapter, tmp_path):
    config = write_config(tmp_path, tiny_family[0], [f"{tiny_family[1]}+{lora_adapter}", str(tiny_family[2])])
    run_merge(config, tmp_path / "OUT", copy_tokenizer=False, quiet=True, write_model_card=False,
              lora_merge_cache=str(tmp_path / "cache"))
    assert (tmp_path / "OUT" / "model.safetensors").is_file()


def test_lora_needs_cache_and_a_usable_cache_entry(tiny_family, lora_adapter, tmp_path):
    from mergekit.common import ModelReference
    from mergekit.config import MergeConfiguration
    from mergekit.options import MergeOptions

    from mergekit_awd.pipeline.config import load_config

    config = write_config(tmp_path, tiny_family[0], [f"{tiny_family[1]}+{lora_adapter}", str(tiny_family[2])])
    merge_config, _, label = load_config(config)
    assert isinstance(merge_config, MergeConfiguration)
    check_models(merge_config, label)  # without options: the folders are fine
    with pytest.raises(ConfigError, match="needs --lora-merge-cache"):
        check_models(merge_config, label, options=MergeOptions())
    cache = tmp_path / "cache"
    check_models(merge_config, label, options=MergeOptions(lora_merge_cache=str(cache)))
    reference = ModelReference.parse(f"{tiny_family[1]}+{lora_adapter}")
    entry = cache / (reference.model._unique_id() + "_" + reference.lora._unique_id())
    entry.mkdir(parents=True)  # what mergekit leaves when a LoRA merge fails half-way
    with pytest.raises(ModelFileError, match="delete") as caught:
        check_models(merge_config, label, options=MergeOptions(lora_merge_cache=str(cache)))
    assert str(entry) in str(caught.value)


# --------------------------------------------------------------------------- vocabulary sizes


def _vocab_config(tiny_family, other: Path, **extra) -> dict:
    return {"merge_method": "task_arithmetic", "base_model": str(tiny_family[0]),
            "models": [{"model": str(tiny_family[1]), "parameters": {"weight": 0.5}},
                       {"model": str(other), "parameters": {"weight": 0.5}}],
            "dtype": "float32", **extra}


def _check(config: dict, **kwargs) -> None:
    from mergekit_awd.pipeline.config import load_config

    merge_config, _, label = load_config(config)
    check_models(merge_config, label, **kwargs)


@pytest.mark.parametrize("setting", [{"tokenizer_source": "union"}, {"tokenizer_source": "base"},
                                     {"tokenizer": {"source": "union"}}])
def test_tokenizer_setting_allows_vocabulary_sizes(tiny_family, vocab_300, setting):
    _check(_vocab_config(tiny_family, vocab_300, **setting))


def test_vocabulary_sizes_without_tokenizer_setting(tiny_family, vocab_300):
    with pytest.raises(ConfigError, match=r"tensor (model.embed_tokens|lm_head).weight has shape \[300, 64\].*tokenizer_source"):
        _check(_vocab_config(tiny_family, vocab_300))


def test_tokenizer_setting_still_refuses_other_shapes(tiny_family, wide):
    with pytest.raises(ConfigError, match=r"mlp.*has shape .*96.*128") as caught:
        _check(_vocab_config(tiny_family, wide, tokenizer_source="union"))
    assert "tokenizer_source" not in str(caught.value)


def test_unsafe_truncate_embeddings_allows_vocabulary_sizes(tiny_family, vocab_300):
    from mergekit.options import MergeOptions

    with pytest.raises(ConfigError):
        _check(_vocab_config(tiny_family, vocab_300), options=MergeOptions())
    _check(_vocab_config(tiny_family, vocab_300), options=MergeOptions(unsafe_truncate_embeddings=True))


def test_vocabulary_fallback_without_definition(tiny_family, vocab_300, wide, monkeypatch):
    """Without a mergekit definition, tensors whose first axis is each model's vocab_size."""
    from mergekit_awd.pipeline import model_checks

    monkeypatch.setattr(model_checks, "vocabulary_axes", lambda *_: None)
    _check(_vocab_config(tiny_family, vocab_300, tokenizer_source="union"))
    with pytest.raises(ConfigError):
        _check(_vocab_config(tiny_family, wide, tokenizer_source="union"))


def test_vocabulary_axes_from_mergekit_definition(tiny_family):
    from mergekit_awd.pipeline.model_checks import vocabulary_axes

    axes = vocabulary_axes(str(tiny_family[0]), None)
    assert axes is not None
    assert axes.get("model.embed_tokens.weight") == 0 and axes.get("lm_head.weight") == 0
    assert "model.layers.0.mlp.up_proj.weight" not in axes


def test_union_merge_of_different_vocabularies(tiny_family, vocab_300, tmp_path):
    """What plain mergekit-yaml merges, mergekit-awd merges too (task_arithmetic, tokenizer_source union)."""
    from safetensors import safe_open

    out = tmp_path / "OUT"
    run_merge(_vocab_config(tiny_family, vocab_300, tokenizer_source="union"), out, quiet=True,
              write_model_card=False)
    with safe_open(str(out / "model.safetensors"), "pt") as handle:
        rows = handle.get_slice("model.embed_tokens.weight").get_shape()[0]
    assert rows >= 204  # the union of the word tokenizers
