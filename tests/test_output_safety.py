"""No command writes where its inputs are; every write is staged, locked and checked at the swap.

Issue #10, items 1-4, 7, 9 and 11, each with the class around it.  Every case asserts the exit
code, one message naming the paths, and that the sha256 of every input and user file is
unchanged.  Each test works on its own copy of the tiny model family, laid out as a user's
folder: ``root/config.yml``, ``root/notes.txt`` and ``root/models/{base,ft_0,ft_1,ft_2}``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
import yaml

from mergekit_awd.cli import run
from mergekit_awd.errors import OutputBusyError, OutputChangedError, OutputPathError
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.pipeline.staging import output_lock
from mergekit_awd.testing.synthetic import merge_config
from mergekit_awd.tools.compress import compress_family

ROOT = Path(__file__).resolve().parents[1]
CLI = ["--no-copy-tokenizer", "--quiet"]


def digests(path: Path) -> Dict[str, str]:
    """sha256 of every file under ``path`` (links not followed)."""
    found = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()):
        found[str(file.relative_to(path))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def siblings_left(folder: Path) -> List[str]:
    """Temporary or lock files a command could leave beside its OUT."""
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name or ".replaced-" in p.name
                  or p.name.endswith(".lock"))


class UserFolder:
    """A user's folder: config, notes and the models; ``unchanged()`` checks every byte of it."""

    def __init__(self, root: Path, family: List[Path], method: str = "awd", parameters: Optional[dict] = None):
        self.root = root
        models = root / "models"
        models.mkdir(parents=True)
        self.paths = [Path(shutil.copytree(p, models / p.name)) for p in family]
        self.config = root / "config.yml"
        self.config.write_text(yaml.safe_dump(merge_config(method, self.paths, parameters or {"steps": 5})))
        (root / "notes.txt").write_text("a user's file\n")
        self.before = digests(root)

    @property
    def base(self) -> Path:
        return self.paths[0]

    def unchanged(self) -> bool:
        return digests(self.root) == self.before


@pytest.fixture
def user(tmp_path, tiny_family) -> UserFolder:
    return UserFolder(tmp_path / "work", tiny_family)


# --------------------------------------------------------------------------- OUT overlapping an input


def overlap_targets(user: UserFolder) -> Dict[str, Path]:
    return {
        "the base": user.base,
        "a fine-tune": user.paths[2],
        "the folder holding the models": user.root / "models",
        "the folder holding the config": user.root,
        "inside a fine-tune": user.paths[1] / "merged",
        "a fine-tune given through ..": user.paths[1] / ".." / "ft_2",
    }


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("target", ["the base", "a fine-tune", "the folder holding the models",
                                    "the folder holding the config", "inside a fine-tune",
                                    "a fine-tune given through .."])
def test_merge_refuses_out_overlapping_an_input(user, capsys, target, overwrite):
    out = overlap_targets(user)[target]
    capsys.readouterr()
    code = run([str(user.config), str(out), *CLI] + (["--overwrite"] if overwrite else []))
    err = capsys.readouterr().err
    assert code == 1, err
    assert "no command writes where its inputs are" in err and str(out) in err
    assert "pass --overwrite" not in err  # the old, wrong advice for OUT = base
    assert err.count("Error:") == 1 and "Traceback" not in err
    assert user.unchanged() and siblings_left(out.parent if out.parent.exists() else user.root) == []
    with pytest.raises(OutputPathError) as caught:
        run_merge(user.config, out, overwrite=overwrite, copy_tokenizer=False, quiet=True)
    assert caught.value.input_path is not None and user.unchanged()


def test_merge_refuses_dot_run_from_the_folder_with_the_config_and_models(user, capsys, monkeypatch):
    monkeypatch.chdir(user.root)
    relative = user.root / "relative.yml"
    relative.write_text(yaml.safe_dump(merge_config("awd", [Path("models") / p.name for p in user.paths], {"steps": 5})))
    user.before = digests(user.root)
    assert run(["relative.yml", ".", "--overwrite", *CLI]) == 1
    err = capsys.readouterr().err
    assert "contains the" in err and "no command writes where its inputs are" in err
    assert user.unchanged()


def test_symlink_out_pointing_to_an_input_is_refused(user, capsys):
    link = user.root.parent / "link-to-ft"
    link.symlink_to(user.paths[1], target_is_directory=True)
    assert run([str(user.config), str(link), "--overwrite", *CLI]) == 1
    err = capsys.readouterr().err
    assert f"resolved: {user.paths[1]}" in err and "is the input model" in err
    assert user.unchanged() and link.is_symlink()


def test_out_containing_the_lora_merge_cache_is_refused(user, capsys):
    cache = user.root.parent / "out" / "lora-cache"
    cache.mkdir(parents=True)
    assert run([str(user.config), str(user.root.parent / "out"), "--lora-merge-cache", str(cache),
                "--overwrite", *CLI]) == 1
    assert "contains the LoRA merge cache" in capsys.readouterr().err and cache.is_dir()


def test_dangling_symlink_out_receives_the_merge(user, capsys):
    target = user.root.parent / "real-out"
    link = user.root.parent / "out-link"
    link.symlink_to(target, target_is_directory=True)
    assert run([str(user.config), str(link), *CLI]) == 0, capsys.readouterr().err
    assert (target / "model.safetensors").is_file() and (link / "model.safetensors").is_file()
    assert siblings_left(user.root.parent) == [] and user.unchanged()


# --------------------------------------------------------------------------- compress


def test_compress_names_adapters_after_resolved_paths(user, capsys):
    (user.paths[1] / "sub").mkdir()
    config = user.root / "family.yml"
    spelled = [user.base, Path(f"{user.paths[1]}/sub/.."), Path(f"{user.paths[2]}/.")]
    config.write_text(yaml.safe_dump(merge_config("tsv", spelled)))
    user.before = digests(user.root)
    out = user.root.parent / "adapters"
    assert run(["compress", str(config), str(out), "--rank", "2", "--quiet"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["compress_report.json", "ft_0", "ft_1"]
    assert user.unchanged() and siblings_left(out.parent) == []


def test_compress_refuses_two_models_with_the_same_folder_name(user, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    other.mkdir()
    twin = Path(shutil.copytree(user.paths[1], other / "ft_0"))
    config = user.root / "twins.yml"
    config.write_text(yaml.safe_dump(merge_config("tsv", [user.base, user.paths[1], twin])))
    user.before = digests(user.root)
    out = tmp_path / "adapters"
    assert run(["compress", str(config), str(out), "--rank", "2"]) == 1
    err = capsys.readouterr().err
    assert "would both be written to the adapter folder 'ft_0'" in err and not out.exists()


@pytest.mark.parametrize("target", ["the folder holding the models", "a fine-tune", "inside a fine-tune"])
def test_compress_refuses_out_overlapping_an_input(user, capsys, target):
    out = overlap_targets(user)[target]
    assert run(["compress", str(user.config), str(out), "--rank", "2", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "compress output" in err and "no command writes where its inputs are" in err
    assert user.unchanged()


def test_compress_into_an_existing_file_is_one_clear_error(user, tmp_path, capsys):
    out = tmp_path / "adapters"
    out.write_text("mine\n")
    assert run(["compress", str(user.config), str(out), "--rank", "2", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert f"{out} exists and is not a folder" in err and "Traceback" not in err
    assert out.read_text() == "mine\n"


def test_failed_compress_overwrite_leaves_the_previous_adapters(user, tmp_path, monkeypatch, capsys):
    import mergekit_awd.tools.compress as compress

    out = tmp_path / "adapters"
    compress_family(user.config, str(out), rank=2)
    previous = digests(out)
    real_write = compress._write_adapter
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(compress, "_write_adapter", fail_on_second)
    assert run(["compress", str(user.config), str(out), "--rank", "3", "--overwrite"]) == 1
    assert "No space left on device" in capsys.readouterr().err
    assert digests(out) == previous and siblings_left(tmp_path) == [] and user.unchanged()


def test_interrupted_compress_leaves_out_as_it_was(user, tmp_path, monkeypatch, capsys):
    import mergekit_awd.tools.compress as compress
    from mergekit_awd.pipeline.staging import MergeInterrupted

    out = tmp_path / "adapters"
    compress_family(user.config, str(out), rank=2)
    previous = digests(out)

    def interrupted(*_args, **_kwargs):
        raise MergeInterrupted("received signal SIGTERM")

    monkeypatch.setattr(compress, "_write_adapter", interrupted)
    assert run(["compress", str(user.config), str(out), "--rank", "3", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "compress interrupted (received signal SIGTERM)" in err and f"{out} was left as it was" in err
    assert digests(out) == previous and siblings_left(tmp_path) == []


# --------------------------------------------------------------------------- inspect --out


def test_inspect_out_is_checked_and_staged(user, tmp_path, capsys):
    assert run(["inspect", str(user.config), "--no-tsv", "--out", str(user.paths[2])]) == 1
    assert "inspect output" in capsys.readouterr().err and user.unchanged()
    out = tmp_path / "report"
    out.mkdir()
    (out / "mine.txt").write_text("keep\n")
    assert run(["inspect", str(user.config), "--no-tsv", "--out", str(out)]) == 1
    assert "exists and is not empty" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep\n"
    assert run(["inspect", str(user.config), "--no-tsv", "--out", str(out), "--overwrite"]) == 0
    assert "inspect_report.json" in {p.name for p in out.iterdir()} and siblings_left(tmp_path) == []


# --------------------------------------------------------------------------- OUT changing during the run


def _during_merge(monkeypatch, action) -> None:
    """Run ``action`` once, while the merge writes its first tensor."""
    from mergekit.io.tensor_writer import TensorWriter

    real = TensorWriter.save_tensor
    done = []

    def save_tensor(self, *args, **kwargs):
        if not done:
            done.append(1)
            action()
        return real(self, *args, **kwargs)

    monkeypatch.setattr(TensorWriter, "save_tensor", save_tensor)


def test_a_file_put_into_out_during_the_merge_is_kept(user, tmp_path, monkeypatch):
    out = tmp_path / "OUT"
    _during_merge(monkeypatch, lambda: (out.mkdir(), (out / "mine.txt").write_text("mine\n")))
    with pytest.raises(OutputChangedError) as caught:
        run_merge(user.config, out, copy_tokenizer=False, quiet=True)
    kept = Path(caught.value.kept_path)
    assert str(out) in str(caught.value) and str(kept) in str(caught.value)
    assert digests(out) == {"mine.txt": hashlib.sha256(b"mine\n").hexdigest()}
    assert (kept / "model.safetensors").is_file() and kept.name.startswith("OUT.unplaced-")
    assert siblings_left(tmp_path) == [] and user.unchanged()


def test_a_previous_output_changed_during_an_overwrite_is_kept(user, tmp_path, monkeypatch):
    out = tmp_path / "OUT"
    run_merge(user.config, out, copy_tokenizer=False, quiet=True)
    _during_merge(monkeypatch, lambda: (out / "config.json").write_text('{"edited": true}\n'))
    with pytest.raises(OutputChangedError) as caught:
        run_merge(user.config, out, overwrite=True, copy_tokenizer=False, quiet=True)
    assert "its files changed" in str(caught.value)
    assert (out / "config.json").read_text() == '{"edited": true}\n' and (out / "model.safetensors").is_file()
    assert (Path(caught.value.kept_path) / "model.safetensors").is_file() and siblings_left(tmp_path) == []


def test_a_second_command_into_the_same_out_refuses_at_once(user, tmp_path, capsys):
    out = tmp_path / "OUT"
    with output_lock(str(out)) as lock_path:
        assert run([str(user.config), str(out), *CLI]) == 1
        err = capsys.readouterr().err
        assert "is being written by another mergekit-awd command" in err and lock_path in err
        assert run(["compress", str(user.config), str(out), "--rank", "2"]) == 1
        assert "is being written by another" in capsys.readouterr().err
        with pytest.raises(OutputBusyError):
            run_merge(user.config, out, copy_tokenizer=False, quiet=True)
    assert not out.exists() and not Path(lock_path).exists() and user.unchanged()


def test_two_merges_started_into_the_same_out(user, tmp_path):
    """A real second process: the first merge (slow) holds OUT; the second refuses and loses nothing."""
    out = tmp_path / "OUT"
    slow = user.root / "slow.yml"
    slow.write_text(yaml.safe_dump(merge_config("awd", user.paths, {"solver": "direct", "steps": 10_000,
                                                                      "optimizer": "gd"})))
    user.before = digests(user.root)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-m", "mergekit_awd.cli", str(slow), str(out), *CLI],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not any(".OUT.partial-" in p.name for p in tmp_path.iterdir()):
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        second = subprocess.run([sys.executable, "-m", "mergekit_awd.cli", str(user.config), str(out), *CLI],
                                capture_output=True, text=True, env=env, timeout=120)
        assert second.returncode == 1 and "is being written by another mergekit-awd command" in second.stderr
        assert first.poll() is None  # the first merge goes on
    finally:
        first.terminate()
        first.communicate(timeout=60)
    assert not out.exists() and siblings_left(tmp_path) == [] and user.unchanged()


def test_lock_is_released_for_the_next_command(user, tmp_path):
    out = tmp_path / "OUT"
    run_merge(user.config, out, copy_tokenizer=False, quiet=True)
    run_merge(user.config, out, overwrite=True, copy_tokenizer=False, quiet=True)
    assert siblings_left(tmp_path) == []
    errors = []

    def hold_briefly():
        try:
            with output_lock(str(out)):
                time.sleep(0.2)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    thread.join()
    assert errors == [] and not (tmp_path / ".OUT.lock").exists()


# --------------------------------------------------------------------------- the card never loses a merge


def test_relative_model_paths_with_a_folder_merge_offline_without_hub_calls(user, capsys, monkeypatch):
    """``model: models/ft_1`` run from the folder holding ``models/``: mergekit's card asked the Hub
    (offline: an error that discarded the finished merge)."""
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError(f"a Hub call for a local path: {args}")

    monkeypatch.setattr(huggingface_hub, "repo_exists", no_network)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(user.root)
    relative = user.root / "relative.yml"
    relative.write_text(yaml.safe_dump(merge_config("awd", [Path("models") / p.name for p in user.paths], {"steps": 5})))
    user.before = digests(user.root)
    out = user.root.parent / "merged"
    assert run(["relative.yml", str(out), "--no-copy-tokenizer", "--quiet"]) == 0, capsys.readouterr().err
    card = (out / "README.md").read_text()
    assert "models/ft_1" in card and (out / "model.safetensors").is_file() and user.unchanged()


def test_a_failing_card_generator_still_leaves_the_merge(user, tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("card generator broke")

    # mergekit's card generator, as the runner's driver of mergekit's pipeline calls it
    monkeypatch.setattr("mergekit_awd.pipeline.mergekit_run.generate_card", broken)
    out = tmp_path / "OUT"
    assert run([str(user.config), str(out), "--no-copy-tokenizer", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert f"{out} holds the complete merged weights" in err and "card generator broke" in err
    assert (out / "model.safetensors").is_file() and (out / "README.md").is_file()
    assert (out / "mergekit_awd_complete.json").is_file() and siblings_left(tmp_path) == []


# --------------------------------------------------------------------------- damaged inputs, NaN in inspect


def test_compress_model_path_ending_in_dotdot_is_one_clear_error(user, tmp_path, capsys):
    """``ft_0/..`` is the folder holding the models: once an rmtree of ``OUT/..``; now not a model."""
    config = user.root / "dotdot.yml"
    config.write_text(yaml.safe_dump(merge_config("tsv", [user.base, Path(f"{user.paths[1]}/..")])))
    user.before = digests(user.root)
    out = tmp_path / "adapters"
    assert run(["compress", str(config), str(out), "--rank", "2", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert err.count("Error:") == 1 and "Traceback" not in err and "config.json" in err
    assert not out.exists() and user.unchanged()


@pytest.mark.parametrize("command", ["merge", "compress", "inspect"])
def test_a_truncated_input_is_one_error_naming_the_file(user, tmp_path, capsys, command):
    weights = user.paths[2] / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    user.before = digests(user.root)
    out = tmp_path / "OUT"
    argv = {"merge": [str(user.config), str(out), *CLI],
            "compress": ["compress", str(user.config), str(out), "--rank", "2"],
            "inspect": ["inspect", str(user.config), "--no-tsv", "--out", str(out)]}[command]
    assert run(argv) == 1
    err = capsys.readouterr().err
    assert str(weights) in err and "truncated" in err and "Traceback" not in err
    assert not out.exists() and user.unchanged() and siblings_left(tmp_path) == []


def test_inspect_names_the_tensor_and_model_holding_nan(user, capsys):
    import torch
    from safetensors.torch import load_file, save_file

    weights = user.paths[1] / "model.safetensors"
    state = load_file(str(weights))
    name = next(n for n in state if n.endswith("q_proj.weight"))
    state[name][0, 0] = float("nan")
    save_file(state, str(weights), metadata={"format": "pt"})
    assert torch.isnan(load_file(str(weights))[name]).any()
    assert run(["inspect", str(user.config), "--no-tsv"]) == 1
    err = capsys.readouterr().err
    assert name in err and str(user.paths[1]) in err and "non-finite" in err
