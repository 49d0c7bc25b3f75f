"""Numerical faults in the inputs, and faults during a merge (exceptions, a full disk, SIGTERM).

Inputs are built by editing saved safetensors of the tiny families; every edited model gets its
own folder (mergekit's loader cache keeps files open per path, so a model must never be
rewritten in place within one process).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from conftest import load_state
from mergekit_awd.cli import run
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.pipeline.staging import MergeInterrupted
from mergekit_awd.testing.synthetic import build_family

ROOT = Path(__file__).resolve().parents[1]
SELECTED = "model.layers.0.self_attn.q_proj.weight"   # disentangled by the default select
POISON_INDEX = 5

SOLVES = {
    "tensor-reduced-adam": {"scope": "tensor", "solver": "reduced", "optimizer": "adam", "steps": 40},
    "tensor-direct-gd": {"scope": "tensor", "solver": "direct", "optimizer": "gd", "lr": 0.05, "steps": 8},
    "model-reduced-gd": {"scope": "model", "solver": "reduced", "optimizer": "gd", "lr": 0.05, "steps": 40},
}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Small tensors: one thread is faster and does not fight the other processes for cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- helpers


def snapshot(path: Path) -> Optional[Dict[str, str]]:
    if not path.exists():
        return None
    return {str(f.relative_to(path)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(path.rglob("*")) if f.is_file()}


def leftovers(out: Path) -> List[str]:
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith((f".{out.name}.partial-", f".{out.name}.replaced-")))


def edited_copy(src: Path, dst: Path, edit: Callable[[Dict[str, torch.Tensor]], None]) -> Path:
    """Copy a model folder and rewrite its weights with ``edit`` (in place on the state dict)."""
    shutil.copytree(src, dst)
    state = load_file(str(dst / "model.safetensors"))
    edit(state)
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def rescaled(base: Path, fine_tune: Path, dst: Path, factor: float) -> Path:
    """θ' = θ_base + factor · (θ − θ_base), computed in float64, saved in the original dtype."""
    base_state = load_file(str(base / "model.safetensors"))

    def edit(state):
        for name, value in state.items():
            b = base_state[name].double()
            state[name] = (b + factor * (value.double() - b)).to(value.dtype)

    return edited_copy(fine_tune, dst, edit)


def config_for(paths: Sequence[Path], parameters: dict, dtype: str = "float32") -> dict:
    return {"merge_method": "awd", "base_model": str(paths[0]),
            "models": [{"model": str(p)} for p in paths[1:]],
            "parameters": dict(parameters), "dtype": dtype}


def merge(config: dict, out: Path, **kwargs) -> Path:
    run_merge(config, out, copy_tokenizer=False, quiet=True, write_model_card=False, **kwargs)
    return out


def strict_json(path: Path):
    def refuse(constant):
        raise AssertionError(f"{path.name} holds {constant}")
    return json.loads(path.read_text(), parse_constant=refuse)


def fill_previous_output(out: Path) -> Dict[str, str]:
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(os.urandom(2048))
    (out / "config.json").write_text('{"previous": true}\n')
    (out / "sub").mkdir()
    (out / "sub" / "stale.txt").write_text("old\n")
    return snapshot(out)


# --------------------------------------------------------------------------- NaN and Inf inputs


@pytest.fixture(scope="module")
def poisoned(tiny_family, tmp_path_factory):
    """{(value, tensor, which): path of a copy of that model with one element poisoned}."""
    root = tmp_path_factory.mktemp("poisoned")
    made = {}
    for value in ("nan", "inf"):
        for tensor in (SELECTED, "model.norm.weight"):
            for which, src in (("fine-tune", tiny_family[2]), ("base", tiny_family[0])):
                def edit(state, tensor=tensor, value=value):
                    state[tensor].view(-1)[POISON_INDEX] = float(value)
                made[value, tensor, which] = edited_copy(src, root / f"{value}-{tensor}-{which}", edit)
    return made


def poisoned_family(tiny_family, poisoned, value, tensor, which) -> List[Path]:
    paths = list(tiny_family)
    paths[0 if which == "base" else 2] = poisoned[value, tensor, which]
    return paths


# every poisoned input with both reduced solves; the (slower) direct solver on two of them
POISON_CASES = [
    pytest.param(v, t, w, solve, id=f"{v}-{t}-{w}-{solve}")
    for v in ("nan", "inf") for t in (SELECTED, "model.norm.weight") for w in ("fine-tune", "base")
    for solve in SOLVES
    if "direct" not in solve or (v, t, w) in {("nan", SELECTED, "fine-tune"), ("inf", SELECTED, "base")}
]


@pytest.mark.parametrize("value,tensor,which,solve", POISON_CASES)
def test_non_finite_input_is_an_error_naming_model_and_tensor(tmp_path, tiny_family, poisoned, value, tensor, which, solve):
    paths = poisoned_family(tiny_family, poisoned, value, tensor, which)
    out = tmp_path / "OUT"
    with pytest.raises(ValueError) as caught:
        merge(config_for(paths, SOLVES[solve]), out)
    message = str(caught.value)
    bad_model = paths[0] if which == "base" else paths[2]
    assert message.startswith(f"{tensor}: non-finite values (NaN or Inf) in {bad_model}"), message
    assert ("(base model)" in message) == (which == "base")
    assert "check_finite: false" in message
    assert not out.exists() and leftovers(out) == []


@pytest.mark.parametrize("value,tensor,which,solve", POISON_CASES)
def test_check_finite_false_merges_anyway(tmp_path, tiny_family, poisoned, value, tensor, which, solve):
    """The non-finite input element stays where it is; nothing else becomes NaN or Inf."""
    paths = poisoned_family(tiny_family, poisoned, value, tensor, which)
    out = merge(config_for(paths, {**SOLVES[solve], "check_finite": False}), tmp_path / "OUT")
    state = load_state(out)
    for name, merged in state.items():
        bad = (~torch.isfinite(merged)).reshape(-1).nonzero().flatten().tolist()
        assert bad == ([POISON_INDEX] if name == tensor else []), name
    strict_json(out / "awd_report.json")


# --------------------------------------------------------------------------- degenerate task vectors


@pytest.fixture(scope="module")
def degenerate(tiny_family, tiny_family_with_identical, tmp_path_factory) -> Dict[str, tuple]:
    """name -> (paths, dtype) of inputs whose task vectors are zero, parallel, single or badly scaled."""
    root = tmp_path_factory.mktemp("degenerate")
    base, ft = tiny_family[0], tiny_family[1:]
    f16 = build_family(root / "f16", n_models=3, seed=3, dtype=torch.float16, tokenizer=False)
    b16 = build_family(root / "b16", n_models=3, seed=4, dtype=torch.bfloat16, tokenizer=False)
    twin = root / "twin"
    shutil.copytree(ft[0], twin)
    cases = {
        "one-zero-task-vector": (list(tiny_family_with_identical), "float32"),
        "all-task-vectors-zero": ([base] + [rescaled(base, f, root / f"zero{i}", 0.0) for i, f in enumerate(ft)], "float32"),
        "two-identical-fine-tunes": ([base, ft[0], twin, ft[1]], "float32"),
        "only-identical-fine-tunes": ([base, ft[0], twin], "float32"),
        "K=1": ([base, ft[0]], "float32"),
        "tiny-1e-8": ([base] + [rescaled(base, f, root / f"tiny{i}", 1e-8) for i, f in enumerate(ft)], "float32"),
        "huge-1e4": ([base] + [rescaled(base, f, root / f"huge{i}", 1e4) for i, f in enumerate(ft)], "float32"),
        "mixed-1e-8-1-1e4": ([base] + [rescaled(base, f, root / f"mixed{i}", s) for i, (f, s) in enumerate(zip(ft, (1e-8, 1.0, 1e4)))], "float32"),
        "mixed-1e-4-1e2": ([base, rescaled(base, ft[0], root / "m4", 1e-4), ft[1], rescaled(base, ft[2], root / "m2", 1e2)], "float32"),
        "float16": (f16, "float16"),
        "float16-mixed-1e-8-1-1e4": ([f16[0]] + [rescaled(f16[0], f, root / f"f16mixed{i}", s) for i, (f, s) in enumerate(zip(f16[1:], (1e-8, 1.0, 1e4)))], "float16"),
        "bfloat16": (b16, "bfloat16"),
        "bfloat16-mixed-1e-8-1-1e4": ([b16[0]] + [rescaled(b16[0], f, root / f"b16mixed{i}", s) for i, (f, s) in enumerate(zip(b16[1:], (1e-8, 1.0, 1e4)))], "bfloat16"),
    }
    return cases


DEGENERATE = ["one-zero-task-vector", "all-task-vectors-zero", "two-identical-fine-tunes", "only-identical-fine-tunes",
              "K=1", "tiny-1e-8", "huge-1e4", "mixed-1e-8-1-1e4", "mixed-1e-4-1e2", "float16",
              "float16-mixed-1e-8-1-1e4", "bfloat16", "bfloat16-mixed-1e-8-1-1e4"]


@pytest.mark.parametrize("solve", list(SOLVES))
@pytest.mark.parametrize("case", DEGENERATE)
def test_degenerate_task_vectors_give_finite_output(tmp_path, degenerate, case, solve):
    paths, dtype = degenerate[case]
    out = merge(config_for(paths, SOLVES[solve], dtype=dtype), tmp_path / "OUT")
    state = load_state(out)
    base = load_state(paths[0])
    assert set(state) == set(base)
    for name, value in state.items():
        assert value.dtype == getattr(torch, dtype), name
        assert torch.isfinite(value.float()).all(), name
    report = strict_json(out / "awd_report.json")
    for entry in report["scopes"].values():
        assert entry["loss"] <= entry["initial_loss"]
    if case == "all-task-vectors-zero":
        for name, value in state.items():  # nothing to add: the output is the base
            assert torch.equal(value, base[name]), name


def test_zero_task_vector_keeps_its_zero_and_the_others_are_disentangled(tmp_path, degenerate):
    paths, _ = degenerate["one-zero-task-vector"]
    out = merge(config_for(paths, SOLVES["tensor-reduced-adam"]), tmp_path / "OUT")
    report = strict_json(out / "awd_report.json")
    assert report["scopes"]
    for entry in report["scopes"].values():
        assert entry["active"] == 2 and entry["coefficients"][1] == 0.0
        assert entry["mean_abs_cos_after"] < entry["mean_abs_cos_before"]


# --------------------------------------------------------------------------- faults during a merge


@pytest.fixture
def previous_out(tmp_path):
    out = tmp_path / "runs" / "OUT"
    return out, fill_previous_output(out)


class Boom(RuntimeError):
    pass


FAULTS = {
    "runtime-error": lambda: Boom("injected failure"),
    "disk-full": lambda: OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    "keyboard-interrupt": lambda: KeyboardInterrupt(),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("scope", ["tensor", "model"])
def test_failure_while_saving_tensors_leaves_out_intact(tmp_path, tiny_family, previous_out, monkeypatch, fault, scope):
    from mergekit.io.tensor_writer import TensorWriter

    out, before = previous_out
    original = TensorWriter.save_tensor
    calls = []

    def failing_save(self, name, tensor, clone=False):
        calls.append(name)
        if len(calls) == 6:
            raise FAULTS[fault]()
        return original(self, name, tensor, clone=clone)

    monkeypatch.setattr(TensorWriter, "save_tensor", failing_save)
    expected = type(FAULTS[fault]())
    with pytest.raises(expected) as caught:
        merge(config_for(tiny_family, {"scope": scope, "steps": 10}), out, overwrite=True)
    assert type(caught.value) is expected
    if fault == "disk-full":
        assert caught.value.errno == errno.ENOSPC
    assert len(calls) == 6  # it failed in the middle, after some tensors were saved
    assert snapshot(out) == before and leftovers(out) == []


def test_disk_full_while_writing_a_shard_file_leaves_out_intact(tmp_path, tiny_family, previous_out, monkeypatch):
    """The shard file is partly on disk when the write fails."""
    import safetensors.torch

    out, before = previous_out
    written = []

    def half_written(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:
            handle.write(b"\0" * 1000)
        written.append(filename)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), filename)

    monkeypatch.setattr(safetensors.torch, "save_file", half_written)
    with pytest.raises(OSError) as caught:
        merge(config_for(tiny_family, {"steps": 10}), out, overwrite=True)
    assert caught.value.errno == errno.ENOSPC and written
    assert ".OUT.partial-" in written[0]  # it wrote into the temporary folder, never into OUT
    assert snapshot(out) == before and leftovers(out) == []


@pytest.mark.parametrize("step", ["write_completion_marker", "write_model_card"])
def test_failure_after_mergekit_finished_keeps_the_finished_merge(tmp_path, tiny_family, previous_out, monkeypatch,
                                                                   step):
    """A failure in the last steps (report, card, completion marker) never discards the merge:
    OUT holds the finished weights and the error says which step failed (issue #10, item 6)."""
    import mergekit_awd.pipeline.runner as runner
    from mergekit_awd.errors import PostMergeError

    out, before = previous_out

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(runner, step, full_disk)
    with pytest.raises(PostMergeError) as caught:
        merge(config_for(tiny_family, {"steps": 10}), out, overwrite=True)
    message = str(caught.value)
    assert f"{out} holds the complete merged weights" in message and "No space left on device" in message
    assert ("`mergekit-awd upload` refuses" in message) == (step == "write_completion_marker")
    after = snapshot(out)
    assert after != before and "model.safetensors" in after and leftovers(out) == []
    assert ("mergekit_awd_complete.json" in after) == (step != "write_completion_marker")


def test_keyboard_interrupt_through_the_cli_is_a_clear_error(tmp_path, tiny_family, previous_out, monkeypatch, capsys):
    from mergekit.io.tensor_writer import TensorWriter

    out, before = previous_out

    def interrupted(self, name, tensor, clone=False):
        raise MergeInterrupted("received signal SIGTERM")

    monkeypatch.setattr(TensorWriter, "save_tensor", interrupted)
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(config_for(tiny_family, {"steps": 10})))
    capsys.readouterr()
    code = run([str(config), str(out), "--overwrite", "--no-copy-tokenizer", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert "merge interrupted (received signal SIGTERM)" in err and f"{out} was left as it was" in err
    assert snapshot(out) == before and leftovers(out) == []


def test_overwrite_replaces_out_only_after_success(tmp_path, tiny_family, previous_out):
    out, before = previous_out
    merge(config_for(tiny_family, {"steps": 10}), out, overwrite=True)
    after = snapshot(out)
    assert after != before
    assert "sub/stale.txt" not in after and (out / "model.safetensors").is_file()
    assert "mergekit_awd_complete.json" in after and leftovers(out) == []
    assert set(load_state(out)) == set(load_state(tiny_family[0]))


def test_finished_out_has_the_permissions_of_a_normal_folder(tmp_path, tiny_family):
    """The temporary folder is created 0700; the finished OUT must not keep that."""
    reference = tmp_path / "made-by-mkdir"
    reference.mkdir()
    out = merge(config_for(tiny_family, {"steps": 5}), tmp_path / "OUT")
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE(reference.stat().st_mode)


# --------------------------------------------------------------------------- SIGTERM


def _wait_for(predicate, process, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        if process.poll() is not None:
            raise AssertionError(f"process ended ({process.returncode}) before {what}: {process.communicate()}")
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"no {what} within {seconds} s")


def test_sigterm_during_a_merge_leaves_out_as_it_was(tmp_path, tiny_family, previous_out):
    out, before = previous_out
    # scope tensor + direct solver + the most steps allowed: the first disentangled tensors take seconds each
    config = tmp_path / "slow.yml"
    config.write_text(yaml.safe_dump(config_for(tiny_family, {"solver": "direct", "steps": 10_000, "optimizer": "gd"})))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "mergekit_awd.cli", str(config), str(out), "--overwrite", "--no-copy-tokenizer", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path),
    )
    try:
        partial = _wait_for(lambda: [p for p in out.parent.iterdir() if p.name.startswith(".OUT.partial-")],
                            process, 120, "temporary .OUT.partial-* folder")
        assert len(partial) == 1
        time.sleep(1.5)  # let mergekit load and start on the tensors
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode not in (0, -signal.SIGTERM), (process.returncode, stderr)
    assert "Error: merge interrupted (received signal SIGTERM)" in stderr, stderr
    assert f"{out} was left as it was and the partial output removed" in stderr
    assert "Traceback" not in stderr
    assert not partial[0].exists()
    assert snapshot(out) == before and leftovers(out) == []


# SIGTERM at the two edges of the staged write, in a small process that loads only
# mergekit_awd/pipeline/staging.py (no torch, no mergekit).
STAGED_SCRIPT = textwrap.dedent("""
    import importlib.util, os, signal, sys, tempfile
    spec = importlib.util.spec_from_file_location("staged_output", sys.argv[1])
    staged = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(staged)
    out, moment = sys.argv[2], sys.argv[3]
    real_mkdtemp, real_rename = tempfile.mkdtemp, os.rename
    def mkdtemp(*args, **kwargs):
        path = real_mkdtemp(*args, **kwargs)
        if moment == "folder-created" and ".partial-" in path:
            os.kill(os.getpid(), signal.SIGTERM)
        return path
    def rename(src, dst):
        real_rename(src, dst)
        if moment == "between-renames" and ".replaced-" in dst:
            os.kill(os.getpid(), signal.SIGTERM)
        if moment == "ctrl-c-between-renames" and ".replaced-" in dst:
            os.kill(os.getpid(), signal.SIGINT)
    staged.tempfile.mkdtemp = mkdtemp
    staged.os.rename = rename
    try:
        with staged.staged_output(out, overwrite=True) as staging:
            with open(os.path.join(staging, "model.safetensors"), "w") as handle:
                handle.write("new")
    except staged.MergeInterrupted as error:
        print("interrupted:", error)
        sys.exit(3)
    except staged.InterruptedAfterSwap as error:
        print("interrupted after the swap:", error)
        sys.exit(4)
    print("finished")
""")


@pytest.mark.parametrize("moment", ["folder-created", "between-renames", "ctrl-c-between-renames"])
def test_sigterm_at_the_edges_of_the_staged_write(tmp_path, moment):
    out = tmp_path / "OUT"
    before = fill_previous_output(out)
    script = tmp_path / "staged.py"
    script.write_text(STAGED_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(ROOT / "mergekit_awd" / "pipeline" / "staging.py"), str(out), moment],
                          capture_output=True, text=True, timeout=60)
    assert leftovers(out) == [], (done.returncode, done.stdout, done.stderr)
    if moment == "folder-created":
        # the handler is in place before the folder exists: a clean interrupt, OUT as it was
        assert done.returncode == 3 and "interrupted: received signal SIGTERM" in done.stdout, done
        assert snapshot(out) == before
    elif moment == "between-renames":
        # the merge had finished: the swap completes, then SIGTERM takes its default course
        assert done.returncode == -signal.SIGTERM, done
        assert snapshot(out) == {"model.safetensors": hashlib.sha256(b"new").hexdigest()}
    else:
        # Ctrl-C is held until the swap completed, then reported as such: OUT is the new merge
        assert done.returncode == 4 and f"interrupted after the swap: {out} holds the complete merge" in done.stdout, done
        assert snapshot(out) == {"model.safetensors": hashlib.sha256(b"new").hexdigest()}
