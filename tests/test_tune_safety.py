"""``mergekit-awd tune`` never answers for a model it did not score, and never writes where its inputs are.

One test per class of the failures found by trying tune as a new user would (issue #25): each asserts
the exit code, one message naming the problem, and the unchanged sha256 of every input and user file.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from merge_helpers import write_config
from mergekit_awd.cli import run
from mergekit_awd.errors import ConfigError, EvaluationDataError
from mergekit_awd.pipeline.staging import output_lock
from mergekit_awd.tools.tune_data import check_lengths, read_tuning_data
from mergekit_awd.tools.tune_grid import grid_points, parse_grid

LINES = [
    {"prompt": "w1 w2 w3", "answer": " w4", "task": "gen"},
    {"prompt": "w5 w6", "answer": " w7 w8", "task": "gen"},
    {"prompt": "w9 w10", "choices": [" w11", " w12"], "label": 1, "task": "cls"},
    {"prompt": "w14", "choices": [" w15", " w16"], "label": 0, "task": "cls"},
] + [{"prompt": f"w{i} w{i + 1}", "choices": [f" w{i + 2}", f" w{i + 3}", f" w{i + 4}"], "label": i % 3, "task": "cls"}
     for i in range(17, 41)]  # enough lines that a changed model's accuracy differs


def _write_lines(path, lines):
    path.write_text("\n".join(json.dumps(line) if not isinstance(line, str) else line for line in lines) + "\n")
    return path


def _digests(*roots) -> dict:
    """sha256 of every file under each root (a file or a folder), links not followed."""
    found = {}
    for root in map(Path, roots):
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@pytest.fixture
def family(tiny_family, tmp_path):
    """A private copy of the tiny family (the tests change its files in place)."""
    root = tmp_path / "family"
    paths = []
    for path in tiny_family:
        shutil.copytree(path, root / path.name)
        paths.append(root / path.name)
    return paths


@pytest.fixture
def setup(family, tmp_path):
    """(config, data, reference folder, every input and user path)."""
    config = write_config(tmp_path, family, {}, method="awd")
    data = _write_lines(tmp_path / "val.jsonl", LINES)
    reference = tmp_path / "reference"  # a fine-tune that is not merged: only --reference reads it
    shutil.copytree(family[1], reference)
    return config, data, reference, [*family, reference, config, data]


def _tune(config, data, out, *extra, grid="lambda=0.2:1.0:0.4"):
    return run(["tune", str(config), "--data", str(data), "--grid", grid, "--out", str(out), "--quiet", *extra])


def _refused(capsys, code, *needles):
    """Exit 1, one error line holding every needle."""
    err = capsys.readouterr().err.strip()
    assert code == 1, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)
    return lines[0]


def _scores(out):
    report = json.loads((Path(out) / "tune_report.json").read_text())
    return [p["tasks"] for p in report["points"]], report["references"], report


# ----------------------------------------------------------------------------------------- 1. the cache


def _replace_keeping_stat(target: Path, content: bytes) -> None:
    """Rewrite ``target`` in place (same inode) with ``content`` of the same size, mtime put back."""
    info = target.stat()
    assert len(content) == info.st_size
    with open(target, "r+b") as handle:
        handle.write(content)
    os.utime(target, ns=(info.st_atime_ns, info.st_mtime_ns))


def _swap_tokens(tokenizer_json: Path) -> None:
    data = json.loads(tokenizer_json.read_text())
    vocab = data["model"]["vocab"]
    vocab["w4"], vocab["w7"] = vocab["w7"], vocab["w4"]
    tokenizer_json.write_text(json.dumps(data))


CHANGES = {  # (family, data, reference) → the input changed in place
    "fine-tune": lambda f, d, r: _replace_keeping_stat(f[2] / "model.safetensors", (f[3] / "model.safetensors").read_bytes()),
    "base": lambda f, d, r: _replace_keeping_stat(f[0] / "model.safetensors", (f[3] / "model.safetensors").read_bytes()),
    "reference": lambda f, d, r: _replace_keeping_stat(r / "model.safetensors", (f[3] / "model.safetensors").read_bytes()),
    "tokenizer": lambda f, d, r: _swap_tokens(f[0] / "tokenizer.json"),
    "data": lambda f, d, r: d.write_text(d.read_text().replace('"label": 1', '"label": 0')),
}


@pytest.mark.parametrize("changed", sorted(CHANGES))
def test_a_changed_input_is_scored_again_and_equals_a_fresh_run(setup, family, tmp_path, capsys, changed):
    config, data, reference, _ = setup
    extra = ["--reference", f"cls={reference}"]
    assert _tune(config, data, tmp_path / "tune", *extra) == 0
    before, refs_before, _ = _scores(tmp_path / "tune")
    CHANGES[changed](family, data, reference)
    capsys.readouterr()
    assert _tune(config, data, tmp_path / "tune", *extra) == 0
    printed = capsys.readouterr().out
    again, refs_again, report = _scores(tmp_path / "tune")
    assert _tune(config, data, tmp_path / "fresh", *extra) == 0
    fresh, refs_fresh, _ = _scores(tmp_path / "fresh")
    assert (again, refs_again) == (fresh, refs_fresh)
    assert (before, refs_before) != (fresh, refs_fresh)  # the change matters: a stale cache would be wrong
    assert report["evaluations"] >= 1 and report["cache"]["scored"] + report["cache"]["reused"] == 3
    if changed != "data":  # the data's digest keys every entry; a model's change is named
        assert "changed since" in printed and report["cache"]["changed"], printed


def test_unchanged_inputs_are_reused_and_the_command_says_why(setup, tmp_path, capsys):
    config, data, _, inputs = setup
    before = _digests(*inputs)
    assert _tune(config, data, tmp_path / "tune") == 0
    capsys.readouterr()
    assert _tune(config, data, tmp_path / "tune") == 0
    printed = capsys.readouterr().out
    assert "cache: 3 of 3 points from the cache (every input had the same content" in printed
    assert _digests(*inputs) == before
    # another --max-new-tokens scores differently: not reused
    assert _tune(config, data, tmp_path / "tune", "--max-new-tokens", "4") == 0
    assert "cache: 0 of 3 points from the cache" in capsys.readouterr().out


def test_a_lora_adapter_and_a_tokenizer_source_are_inputs_of_the_cache(tiny_family, lora_adapter, tmp_path):
    from mergekit_awd.tools.tune_cache import identify
    from mergekit_awd.tools.tune_plan import plan_tune

    adapter = tmp_path / "adapter"
    shutil.copytree(lora_adapter, adapter)
    data = yaml.safe_load(write_config(tmp_path, tiny_family, {}, method="awd").read_text())
    data["models"][0]["model"] = f"{tiny_family[1]}+{adapter}"
    data["tokenizer_source"] = str(tiny_family[2])
    plan = plan_tune(data, [parse_grid("lambda=0.5")], {}, str(tmp_path / "out"), None, False)
    roles = dict(plan.model_inputs)
    assert any(role.startswith("LoRA adapter") and path == str(adapter) for role, path in roles.items())
    assert any(role.startswith("tokenizer_source") for role in roles)
    digest = identify("adapter", str(adapter)).digest
    weights = adapter / "adapter_model.safetensors"
    content = bytearray(weights.read_bytes())
    content[-1] ^= 1
    _replace_keeping_stat(weights, bytes(content))
    assert identify("adapter", str(adapter)).digest != digest


# ----------------------------------------------------------------------------------------- 2, 3, 9. data


def test_duplicate_choices_are_refused(setup, tmp_path, capsys):
    config, _, _, inputs = setup
    data = _write_lines(tmp_path / "dup.jsonl", [{"prompt": "w1", "choices": [" w2", " w2"], "label": 1}])
    before = _digests(*inputs, data)
    _refused(capsys, _tune(config, data, tmp_path / "tune"), f"{data}, line 1", "are the same text")
    assert _digests(*inputs, data) == before and not (tmp_path / "tune").exists()


def test_a_huge_prompt_is_refused_before_any_merge(setup, tmp_path, capsys):
    config, _, _, inputs = setup
    data = _write_lines(tmp_path / "huge.jsonl", [LINES[0], {"prompt": "w1 " * 2_000_000, "answer": " w2"}])
    before = _digests(*inputs, data)
    _refused(capsys, _tune(config, data, tmp_path / "tune"), f"{data}, line 2", "--max-tokens")
    assert _digests(*inputs, data) == before and not (tmp_path / "tune").exists()


def test_line_lengths_are_bounded_in_tokens(family, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(family[0]))
    data = read_tuning_data(_write_lines(tmp_path / "val.jsonl", [LINES[0], {"prompt": "w1 w2 w3", "answer": " w4 w5 w6"}]))
    check_lengths(data, tokenizer, max_tokens=20, max_new_tokens=4)
    with pytest.raises(EvaluationDataError, match="line 2: prompt and answer take 7 tokens, more than --max-tokens 6"):
        check_lengths(data, tokenizer, max_tokens=6, max_new_tokens=3)  # 3 + max(3 + EOS, 3)
    with pytest.raises(EvaluationDataError, match="line 2: the answer is 3 tokens, more than --max-new-tokens 2"):
        check_lengths(data, tokenizer, max_tokens=20, max_new_tokens=2)


def test_data_must_be_utf8_and_readable(setup, tmp_path, capsys):
    config, _, _, inputs = setup
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(json.dumps(LINES[0]).encode() + b"\n" + '{"prompt": "caf\u00e9", "answer": " w2"}'.encode("latin-1") + b"\n")
    before = _digests(*inputs, bad)
    _refused(capsys, _tune(config, bad, tmp_path / "tune"), f"{bad}, line 2: not valid UTF-8")
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps(LINES[0]).encode() + b"\n")
    assert read_tuning_data(bom).size == 1
    loop = tmp_path / "loop.jsonl"
    os.symlink(loop, loop)
    _refused(capsys, _tune(config, loop, tmp_path / "tune"), str(loop), "symbolic links")
    assert not (tmp_path / "tune").exists() and _digests(*inputs, bad) == before


def test_an_unknown_reference_task_is_refused_before_loading(setup, tmp_path, capsys):
    config, data, reference, inputs = setup
    before = _digests(*inputs)
    _refused(capsys, _tune(config, data, tmp_path / "tune", "--reference", f"nope={reference}"),
             "--reference nope=", "the data has no task 'nope'")
    assert not (tmp_path / "tune").exists() and _digests(*inputs) == before


# ----------------------------------------------------------------------------------------- 4, 7, 8. writes


@pytest.mark.parametrize("where", ["out", "merge", "config"])
def test_nothing_is_written_inside_a_reference_or_next_to_the_data(setup, tmp_path, capsys, where):
    config, data, reference, inputs = setup
    before = _digests(*inputs)
    out, extra = tmp_path / "tune", []
    if where == "out":
        out = reference / "tune"
    elif where == "merge":
        extra = ["--merge", str(reference / "merged")]
    else:
        shutil.copy(config, reference / "merge.yml")
        config = reference / "merge.yml"
        before = _digests(*inputs)
    code = _tune(config, data, out, "--reference", f"cls={reference}", *extra)
    _refused(capsys, code, "reference model for task cls", str(reference))
    assert _digests(*inputs) == before
    assert not (tmp_path / "tune").exists() and not (reference / "tune").exists()
    # the data file is an input too: no --out or --merge holds it
    (tmp_path / "data").mkdir()
    shutil.copy(data, tmp_path / "data" / "val.jsonl")
    for option in ("--out", "--merge"):
        argv = ["tune", str(setup[0]), "--data", str(tmp_path / "data" / "val.jsonl"), "--quiet", option,
                str(tmp_path / "data")]
        _refused(capsys, run(argv), "contains the validation data")
        assert os.listdir(tmp_path / "data") == ["val.jsonl"]


def test_out_and_merge_in_one_folder_are_refused_up_front(setup, tmp_path, capsys):
    config, data, _, inputs = setup
    before = _digests(*inputs)
    for merge in (tmp_path / "x", tmp_path / "x" / "merged"):
        _refused(capsys, _tune(config, data, tmp_path / "x", "--merge", str(merge)), "--out folder")
        assert not (tmp_path / "x").exists() and _digests(*inputs) == before


def _read_only(folder: Path):
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0:
        return lambda: subprocess.run(["chattr", "-i", str(folder)], check=True)
    pytest.skip("no way to make a folder read-only for root here (chattr +i failed)")


def test_an_unwritable_config_folder_is_refused_before_the_first_merge(setup, tmp_path, capsys):
    config, data, _, inputs = setup
    folder = tmp_path / "configs"
    folder.mkdir()
    shutil.copy(config, folder / "merge.yml")
    before = _digests(*inputs, folder)
    undo = _read_only(folder)
    try:
        code = _tune(folder / "merge.yml", data, tmp_path / "tune")
    finally:
        undo()
    _refused(capsys, code, str(folder), "cannot write the tuned configuration merge.tuned.yml")
    assert not (tmp_path / "tune").exists() and sorted(os.listdir(folder)) == ["merge.yml"]
    assert _digests(*inputs, folder) == before


# ----------------------------------------------------------------------------------------- 5, 9, 10. runs


# a long grid with a merge per point, and one with one merge and many scored points on the λ path
PHASES = {"merging": ("alpha=0.01:0.3:0.01", "lambda=0.5"), "scoring": ("alpha=0.01", "lambda=0.01:5:0.01")}


def _spawn(config, data, out, phase="merging"):
    """A tune in its own process with a long grid."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    # SIGINT's default handler restored: a shell starting this suite in the background hands its children
    # SIGINT ignored, and Python then never raises KeyboardInterrupt
    code = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from mergekit_awd.cli import run; sys.exit(run(sys.argv[1:]))")
    return subprocess.Popen([sys.executable, "-c", code, "tune", str(config), "--data", str(data), "--grid",
                             PHASES[phase][0], "--grid", PHASES[phase][1], "--out", str(out), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_scores(out: Path, count: int, process, limit: float = 240.0) -> None:
    """Until ``out``'s cache holds ``count`` scores (a merge has run and the next is under way)."""
    started = time.monotonic()
    points = out / "tune_points.jsonl"
    while time.monotonic() - started < limit:
        if points.exists() and len(points.read_text().splitlines()) >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    process.kill()
    pytest.fail("the tune did not score in time")


@pytest.mark.parametrize("phase", sorted(PHASES))
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_tune_leaves_no_scratch_and_says_what_it_kept(setup, tmp_path, signum, phase):
    config, data, _, inputs = setup
    before = _digests(*inputs)
    out = tmp_path / "tune"
    process = _spawn(config, data, out, phase)
    _wait_for_scores(out, 2, process)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    kept = len((out / "tune_points.jsonl").read_text().splitlines())
    assert "tune interrupted (" in err and f"{kept} scores kept in {out}" in err, err
    assert "()" not in err
    assert sorted(p.name for p in out.iterdir()) == ["tune_points.jsonl"]
    assert not list(tmp_path.glob(".tune*")) and _digests(*inputs) == before


def test_a_killed_tunes_scratch_is_removed_by_the_next_run(setup, tmp_path, capsys):
    config, data, _, _ = setup
    out = tmp_path / "tune"
    process = _spawn(config, data, out)
    _wait_for_scores(out, 1, process)
    process.kill()
    process.communicate()
    assert (out / ".tune-scratch").exists()
    assert _tune(config, data, out, grid="lambda=0.5") == 0
    assert not (out / ".tune-scratch").exists()


def test_a_second_tune_into_the_same_out_is_refused_at_once(setup, tmp_path, capsys):
    config, data, _, inputs = setup
    before = _digests(*inputs)
    out = tmp_path / "tune"
    out.mkdir()
    with output_lock(str(out)):
        _refused(capsys, _tune(config, data, out), "is being written by another mergekit-awd command")
    assert list(out.iterdir()) == [] and _digests(*inputs) == before


# ----------------------------------------------------------------------------------------- 6. the grid


@pytest.mark.parametrize("text,message", [
    ("lambda=0:1e300:1e-300", "more than 1000 values"),
    ("lambda=0:1:1e-320", "more than 1000 values"),
    ("lambda=0:2000:1", "more than 1000 values"),
    ("lambda=0:1:nan", "finite"),
    ("lambda=1,1.0", "repeats"),
    ("lambda=0.5,.nan", "not a finite number"),
    ("lambda=1:1.0000000000001:1e-14", "below the resolution"),
])
def test_bad_grids_are_refused_in_one_line(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_grid(text)


def test_grid_values_are_numbers_compared_by_value():
    assert parse_grid("lambda=0:1e-10:1e-11").values == tuple(float(f"{i}e-11") for i in range(11))
    assert parse_grid("lambda=0.1:0.3:0.1").values == (0.1, 0.2, 0.3)
    assert parse_grid("flag=true,1").values == (True, 1)  # a boolean is not the number 1
    with pytest.raises(ConfigError, match=r"at most 1000\)"):
        grid_points([parse_grid("lambda=0:0.99:0.01"), parse_grid("alpha=0:0.1:0.01")])


def test_a_tiny_step_grid_tunes_without_a_key_error(setup, tmp_path, capsys):
    config, data, _, inputs = setup
    before = _digests(*inputs)
    assert _tune(config, data, tmp_path / "tune", grid="lambda=0:1e-10:5e-11") == 0
    assert [p["parameters"]["lambda"] for p in _scores(tmp_path / "tune")[2]["points"]] == [0.0, 5e-11, 1e-10]
    capsys.readouterr()
    code = _tune(config, data, tmp_path / "tune2", grid="lambda=1,1.0")
    _refused(capsys, code, "repeats")
    assert not (tmp_path / "tune2").exists() and _digests(*inputs) == before


# ----------------------------------------------------------------------------------------- 11. validation


def test_tune_runs_the_merge_validation_before_loading(family, tmp_path, capsys):
    config = write_config(tmp_path, family, {}, method="task_arithmetic")  # no weight: merge refuses it
    data = _write_lines(tmp_path / "val.jsonl", LINES)
    before = _digests(*family, config, data)
    _refused(capsys, _tune(config, data, tmp_path / "tune"), "needs parameter 'weight'")
    assert not (tmp_path / "tune").exists()
    _refused(capsys, run([str(config), str(tmp_path / "merged"), "--quiet"]), "needs parameter 'weight'")
    assert _digests(*family, config, data) == before and not (tmp_path / "merged").exists()
    bad_shape = write_config(tmp_path, family, {"lambda": 0.5}, method="awd", name="bad.yml")
    from safetensors.torch import load_file, save_file

    state = load_file(str(family[3] / "model.safetensors"))
    name = next(iter(state))
    state[name] = torch.zeros(3, 3)
    save_file(state, str(family[3] / "model.safetensors"))
    _refused(capsys, _tune(bad_shape, data, tmp_path / "tune"), name)
    assert not (tmp_path / "tune").exists()
