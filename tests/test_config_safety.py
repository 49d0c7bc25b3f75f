"""Loading a configuration is safe: bounded work, bounded messages, nothing silently dropped.

* YAML anchors/aliases may expand to at most ``MAX_EXPANDED_NODES`` nodes (an alias bomb is
  refused before anything expands it); ordinary anchor reuse keeps working.
* Duplicate keys are refused, naming the key and its line.
* Unknown (misspelt) keys are refused wherever mergekit's models would ignore them, with a
  did-you-mean.
* Booleans are not numbers, and ``steps`` is at most 10000.
* Every message stays within ``MAX_MESSAGE_CHARS`` (plus the few characters ``bounded`` adds).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mergekit_awd.cli import run
from mergekit_awd.pipeline.config import MAX_EXPANDED_NODES, load_config
from mergekit_awd.errors import MAX_MESSAGE_CHARS, ConfigError
from mergekit_awd.mergekit_adapter.awd_method import awd_merge_method
from mergekit_awd.pipeline.validation import check_parameters

BOUND = MAX_MESSAGE_CHARS + 100


@pytest.fixture(autouse=True)
def watchdog():
    """Turn a runaway load into a failure instead of a hung test run (not a timing assertion)."""
    def expired(signum, frame):
        raise AssertionError("configuration loading did not finish within 120 s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(120)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """``parameters`` holding nested aliases: ``width ** levels`` leaves from a few hundred bytes."""
    names = [f"l{i}" for i in range(levels)]
    lines = [f"  {names[0]}: &{names[0]} [{', '.join(['x'] * width)}]"]
    for previous, name in zip(names, names[1:]):
        lines.append(f"  {name}: &{name} [{', '.join([f'*{previous}'] * width)}]")
    return "merge_method: awd\nbase_model: base\nmodels:\n  - model: ft\nparameters:\n" + "\n".join(lines) + "\n"


def awd_yaml(extra: str = "", parameters: str = "steps: 5") -> str:
    return (
        "merge_method: awd\nbase_model: base\n"
        "models:\n  - model: ft_0\n  - model: ft_1\n"
        f"parameters: {{{parameters}}}\n{extra}"
    )


def refused(text, *words: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(text)
    message = str(caught.value)
    assert len(message) <= BOUND, len(message)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return message


def check_awd(text: str) -> None:
    config, _, label = load_config(text)
    check_parameters(config, awd_merge_method, label)


# --------------------------------------------------------------------------- aliases


BOMB_SCRIPT = """
import json, sys
from mergekit_awd.pipeline.config import load_config
from mergekit_awd.errors import ConfigError
try:
    load_config(sys.stdin.read())
except ConfigError as error:
    print(json.dumps({"error": str(error)}))
else:
    print(json.dumps({"error": None}))
"""


def test_alias_bomb_is_refused_with_a_short_message():
    # In a child process: without the bound, pydantic expands the bomb in native code, where
    # neither a signal nor an exception stops it; the generous timeout only turns a hang into a failure.
    bomb = alias_bomb()
    assert len(bomb) < 600
    try:
        done = subprocess.run([sys.executable, "-c", BOMB_SCRIPT], input=bomb, capture_output=True,
                              text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("loading a 9-level alias bomb did not finish")
    assert done.returncode == 0, done.stderr[-2000:]
    message = json.loads(done.stdout.strip().splitlines()[-1])["error"]
    assert message is not None and len(message) <= BOUND, message and len(message)
    for word in ("<yaml text>", f"more than {MAX_EXPANDED_NODES} nodes", "anchors/aliases"):
        assert word in message, message


# The in-process bombs below have 6 levels, 9**6 = 531441 leaves: past the limit, yet small enough
# that an unbounded loader finishes (and the test fails instead of hanging).


def test_a_smaller_bomb_past_the_limit_is_refused_in_process():
    refused(alias_bomb(levels=6), f"more than {MAX_EXPANDED_NODES} nodes", "anchors/aliases")


def test_alias_bomb_from_a_file_names_the_file(tmp_path):
    path = tmp_path / "bomb.yml"
    path.write_text(alias_bomb(levels=6))
    refused(path, str(path), f"more than {MAX_EXPANDED_NODES} nodes")


def test_a_self_referencing_alias_is_refused():
    refused("merge_method: awd\nmodels: [{model: a}]\nparameters: &p {x: *p}\n", "refers to the anchor")


def test_ordinary_anchor_reuse_still_loads():
    text = (
        "merge_method: awd\nbase_model: base\n"
        "models:\n"
        "  - model: ft_0\n    parameters: &half {weight: 0.5}\n"
        "  - model: ft_1\n    parameters: *half\n"
        "  - model: ft_2\n    parameters: {<<: *half, weight: 2.0}\n"   # merge key, then override
        "parameters: &shared {steps: 5, lambda: 0.7}\n"
    )
    config, _, _ = load_config(text)
    assert [m.parameters for m in config.models] == [{"weight": 0.5}, {"weight": 0.5}, {"weight": 2.0}]
    assert config.parameters == {"steps": 5, "lambda": 0.7}


def test_a_long_document_below_the_limit_loads():
    # a few thousand nodes written out (a long gradient list) are fine
    values = ", ".join(["0.5"] * 5000)
    config, _, _ = load_config(awd_yaml(parameters=f"weight: [{values}]"))
    assert len(config.parameters["weight"]) == 5000


# --------------------------------------------------------------------------- duplicate keys


def test_duplicate_top_level_key_is_refused_naming_key_and_line():
    refused("merge_method: awd\nmodels: [{model: a}]\nmerge_method: ties\n",
            "duplicate key 'merge_method'", "line 3", "line 1")


def test_duplicate_nested_key_is_refused_naming_key_and_line():
    text = "merge_method: awd\nmodels:\n  - model: a\n    parameters:\n      weight: 1\n      weight: 2\n"
    refused(text, "duplicate key 'weight'", "line 6", "line 5")


def test_duplicate_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "dup.yml"
    path.write_text(awd_yaml("dtype: float32\ndtype: bfloat16\n"))
    refused(path, str(path), "duplicate key 'dtype'", "line 7")


# --------------------------------------------------------------------------- unknown keys


def test_misspelt_parameters_at_top_level():
    refused(awd_yaml("paramters: {lambda: 0.5}\n"),
            "unknown key 'paramters'", "at the top level", "did you mean 'parameters'", "accepted: ", "merge_method")


def test_misspelt_parameters_in_a_model_entry():
    text = "merge_method: awd\nbase_model: base\nmodels:\n  - model: ft_0\n  - model: ft_1\n    paramters: {weight: 2}\n"
    refused(text, "unknown key 'paramters'", "models[1]", "did you mean 'parameters'", "accepted: model, parameters")


def test_misspelt_parameters_in_a_slice_source():
    text = (
        "merge_method: awd\nbase_model: base\nslices:\n  - sources:\n"
        "      - model: base\n        layer_range: [0, 2]\n"
        "      - model: ft_0\n        layer_range: [0, 2]\n        paramters: {weight: 2}\n"
    )
    refused(text, "unknown key 'paramters'", "slices[0].sources[1]", "did you mean 'parameters'", "layer_range")


def test_misspelt_key_in_a_dict_input():
    data = yaml.safe_load(awd_yaml())
    data["models"][0]["modle"] = "x"
    refused(data, "<dict>", "unknown key 'modle'", "models[0]", "did you mean 'model'")


def test_misspelt_key_deeper_in_nested_models():
    text = awd_yaml("tokenizer: {source: union, pad_to_multple_of: 8}\n")
    refused(text, "unknown key 'pad_to_multple_of'", "in tokenizer", "did you mean 'pad_to_multiple_of'")


def test_unknown_parameter_names_are_left_to_the_method_check():
    # load_config leaves parameters blocks alone; check_parameters names the method's parameters
    config, _, label = load_config(awd_yaml(parameters="stepz: 5"))
    with pytest.raises(ConfigError, match="unknown parameter 'stepz'"):
        check_parameters(config, awd_merge_method, label)


def test_a_huge_unknown_key_gives_a_bounded_message():
    data = yaml.safe_load(awd_yaml())
    data["k" * 50_000] = 1
    message = refused(data, "<dict>", "unknown key")
    assert "more characters" in message


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("parameters, words", [
    ("steps: true", ["parameters.steps = True", "not a number"]),
    ("alpha: false", ["parameters.alpha = False", "not a number"]),
    ("lambda: true", ["parameters.lambda = True"]),
    ("lr: [0.01, true]", ["parameters.lr = True"]),
])
def test_booleans_are_not_numbers(parameters, words):
    config, _, label = load_config(awd_yaml(parameters=parameters))
    with pytest.raises(ConfigError) as caught:
        check_parameters(config, awd_merge_method, label)
    for word in words:
        assert word in str(caught.value)


def test_a_boolean_weight_in_a_model_entry_is_refused():
    text = "merge_method: awd\nbase_model: base\nmodels:\n  - model: ft_0\n    parameters: {weight: true}\n"
    config, _, label = load_config(text)
    with pytest.raises(ConfigError, match=r"models\[0\] \(ft_0\)\.parameters\.weight = True"):
        check_parameters(config, awd_merge_method, label)


def test_boolean_parameters_still_take_booleans():
    check_awd(awd_yaml(parameters="normalize: true, check_finite: false, steps: 5, alpha: 0"))


def test_steps_upper_bound():
    check_awd(awd_yaml(parameters="steps: 10000"))
    config, _, label = load_config(awd_yaml(parameters="steps: 10001"))
    with pytest.raises(ConfigError) as caught:
        check_parameters(config, awd_merge_method, label)
    assert "parameters.steps = 10001" in str(caught.value)
    assert "10000" in str(caught.value).replace("10_000", "10000")


# --------------------------------------------------------------------------- command line


def test_cli_refuses_a_bomb_with_one_short_message(tmp_path, tiny_family, capsys):
    base, *fine_tunes = tiny_family
    bomb = alias_bomb(levels=6).replace("base_model: base", f"base_model: {base}").replace(
        "  - model: ft\n", "".join(f"  - model: {p}\n" for p in fine_tunes))
    config = tmp_path / "bomb.yml"
    config.write_text(bomb)
    out = tmp_path / "OUT"
    capsys.readouterr()
    code = run([str(config), str(out), "--no-copy-tokenizer", "--quiet"])
    captured = capsys.readouterr()
    assert code != 0
    err = captured.err.strip()
    assert err.startswith("Error: ") and str(config) in err and "anchors/aliases" in err, err
    assert len(err.splitlines()) == 1 and len(err) <= BOUND, err
    assert "Traceback" not in err and captured.out == ""
    assert not out.exists()
    assert [p.name for p in Path(tmp_path).iterdir()] == ["bomb.yml"]
