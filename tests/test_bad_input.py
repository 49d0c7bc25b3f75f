"""Bad input: one case per failure, each with its exact failure mode and OUT left as it was.

Every case runs through ``run_merge`` and through the CLI (``cli.run``), with OUT absent and with
OUT already holding a previous merge (and ``overwrite`` asked for, so only the bad input can stop
the run).  A case states the exception type, words its message must contain (the offending key,
file, model or tensor, and what would be accepted) and that nothing was written: OUT does not
exist, or keeps its files byte for byte, and no temporary sibling folder is left behind.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import yaml

from mergekit_awd.cli import run
from mergekit_awd.pipeline.config import ConfigError
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.pipeline.staging import OutputExistsError
from mergekit_awd.testing.synthetic import LlamaShape, build_family

MISSING_BASE = "/nonexistent/mergekit-awd-tests/base"
MISSING_FT = "/nonexistent/mergekit-awd-tests/ft_1"


# --------------------------------------------------------------------------- helpers


def snapshot(path: Path) -> Optional[Dict[str, str]]:
    """sha256 of every file under ``path`` (or of ``path`` itself); None when it does not exist."""
    if not path.exists() and not path.is_symlink():
        return None
    if path.is_file():
        return {".": hashlib.sha256(path.read_bytes()).hexdigest()}
    digests = {}
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digests[str(file.relative_to(path))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return digests


def leftovers(out: Path) -> List[str]:
    """Temporary siblings a staged write could leave next to OUT."""
    return sorted(p.name for p in out.parent.iterdir()
                  if p.name.startswith((f".{out.name}.partial-", f".{out.name}.replaced-")))


def fill_previous_output(out: Path) -> None:
    """OUT as a previous merge left it: a weights file, a config, a nested file."""
    out.mkdir(parents=True)
    (out / "model.safetensors").write_bytes(os.urandom(4096))
    (out / "config.json").write_text('{"previous": true}\n')
    (out / "sub").mkdir()
    (out / "sub" / "note.txt").write_text("kept\n")


def base_config(paths: List[Path]) -> dict:
    return {
        "merge_method": "awd",
        "base_model": str(paths[0]),
        "models": [{"model": str(p)} for p in paths[1:]],
        "parameters": {"steps": 5},
        "dtype": "float32",
    }


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    family: List[Path]
    wide: Path        # same architecture, intermediate_size 96 instead of 128
    other_arch: Path  # a copy of ft_2 whose config.json says MistralForCausalLM


@pytest.fixture(scope="module")
def inputs(tiny_family, tmp_path_factory) -> Inputs:
    root = tmp_path_factory.mktemp("bad_inputs")
    wide = build_family(root / "wide", n_models=1, shape=LlamaShape(intermediate_size=96), seed=5,
                        tokenizer=False)[1]
    other = root / "mistral"
    shutil.copytree(tiny_family[3], other)
    config = json.loads((other / "config.json").read_text())
    config.update(architectures=["MistralForCausalLM"], model_type="mistral")
    (other / "config.json").write_text(json.dumps(config))
    return Inputs(list(tiny_family), wide, other)


def first_shape_mismatch(base: Path, other: Path) -> Tuple[str, List[int], List[int]]:
    """The first tensor (in the checkpoint's key order) whose shape differs, test-side."""
    from safetensors import safe_open

    with safe_open(str(base / "model.safetensors"), "pt") as b, safe_open(str(other / "model.safetensors"), "pt") as o:
        for name in b.keys():
            if name in o.keys() and b.get_slice(name).get_shape() != o.get_slice(name).get_shape():
                return name, list(o.get_slice(name).get_shape()), list(b.get_slice(name).get_shape())
    raise AssertionError("no mismatching tensor")


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    id: str
    edit: Callable[[dict, Inputs], None]
    words: Callable[[Inputs], List[str]] = field(default=lambda i: [])
    error: type = ConfigError
    names_config: bool = True  # the message names the configuration file


def params(**values) -> Callable[[dict, Inputs], None]:
    def edit(config: dict, _: Inputs) -> None:
        config["parameters"].update(values)
    return edit


def model_params(index: int, **values) -> Callable[[dict, Inputs], None]:
    def edit(config: dict, _: Inputs) -> None:
        config["models"][index].setdefault("parameters", {}).update(values)
    return edit


def set_model(index: int, path: Callable[[Inputs], str]) -> Callable[[dict, Inputs], None]:
    def edit(config: dict, inputs: Inputs) -> None:
        config["models"][index]["model"] = path(inputs)
    return edit


def only_base(config: dict, inputs: Inputs) -> None:
    config["models"] = [{"model": str(inputs.family[0])}]


def no_base(config: dict, _: Inputs) -> None:
    del config["base_model"]


def missing_base(config: dict, _: Inputs) -> None:
    config["base_model"] = MISSING_BASE


def unknown_method(config: dict, _: Inputs) -> None:
    config["merge_method"] = "awdd"


def shape_words(inputs: Inputs) -> List[str]:
    name, other, base = first_shape_mismatch(inputs.family[0], inputs.wide)
    return [f"tensor {name} ", str(other), str(base), str(inputs.wide), str(inputs.family[0])]


ACCEPTED_PARAMETERS = ("accepted: alpha, check_finite, combine, combine_solver, density, epsilon, gamma, int8_mask, lambda, lr, momentum, "
                       "normalize, optimizer, rescale, scope, select, solver, steps, units, weight, weight_decay")

CASES = [
    # unknown / misspelt names, globally and in one model's parameters
    Case("lamda-global", params(lamda=0.3), lambda i: ["'lamda'", "in parameters", ACCEPTED_PARAMETERS]),
    Case("alfa-global", params(alfa=0.1), lambda i: ["'alfa'", "in parameters", ACCEPTED_PARAMETERS]),
    Case("lamda-in-model", model_params(1, lamda=0.3),
         lambda i: ["'lamda'", f"models[1] ({i.family[2]}).parameters", ACCEPTED_PARAMETERS]),
    Case("alfa-in-model", model_params(0, alfa=0.1),
         lambda i: ["'alfa'", f"models[0] ({i.family[1]}).parameters", ACCEPTED_PARAMETERS]),
    # wrong types
    Case("steps-string", params(steps="many"), lambda i: ["parameters.steps = 'many'", "valid integer", "solver iterations"]),
    Case("alpha-list-of-strings", params(alpha=["a", "b"]), lambda i: ["parameters.alpha = 'a'", "valid number"]),
    Case("weight-string-in-model", model_params(1, weight="heavy"),
         lambda i: [f"models[1] ({i.family[2]}).parameters.weight = 'heavy'", "valid number"]),
    Case("check-finite-not-bool", params(check_finite="maybe"), lambda i: ["parameters.check_finite = 'maybe'", "boolean"]),
    # out of range
    Case("alpha-negative", params(alpha=-0.5), lambda i: ["parameters.alpha = -0.5", "greater than or equal to 0"]),
    Case("lambda-nan", params(**{"lambda": float("nan")}), lambda i: ["parameters.lambda = nan", "finite number"]),
    Case("lambda-inf", params(**{"lambda": float("inf")}), lambda i: ["parameters.lambda = inf", "finite number"]),
    Case("alpha-inf", params(alpha=float("inf")), lambda i: ["parameters.alpha = inf", "finite number"]),
    Case("weight-nan-in-model", model_params(0, weight=float("nan")),
         lambda i: [f"models[0] ({i.family[1]}).parameters.weight = nan", "finite number"]),
    Case("steps-zero", params(steps=0), lambda i: ["parameters.steps = 0", "greater than or equal to 1"]),
    Case("steps-negative", params(steps=-3), lambda i: ["parameters.steps = -3", "greater than or equal to 1"]),
    Case("lr-zero", params(lr=0), lambda i: ["parameters.lr = 0", "greater than 0"]),
    Case("lr-negative", params(lr=-0.01), lambda i: ["parameters.lr = -0.01", "greater than 0"]),
    Case("optimizer-lbfgs", params(optimizer="lbfgs"), lambda i: ["parameters.optimizer = 'lbfgs'", "'gd', 'adam' or 'sgd'"]),
    Case("momentum-one", params(momentum=1.0), lambda i: ["parameters.momentum = 1.0", "less than or equal to 0.999"]),
    Case("scope-global", params(scope="global"), lambda i: ["parameters.scope = 'global'", "'tensor', 'model' or 'row'"]),
    Case("select-attention", params(select="attention"),
         lambda i: ["parameters.select = 'attention'", "'block_linear', 'matrices', 'all' or 'none'"]),
    Case("units-percent", params(units="percent"), lambda i: ["parameters.units = 'percent'", "'relative' or 'absolute'"]),
    Case("solver-exact", params(solver="exact"), lambda i: ["parameters.solver = 'exact'", "'reduced' or 'direct'"]),
    # the models
    Case("only-a-base", only_base, lambda i: ["merge_method awd", "at least 1 fine-tuned", "got 0"]),
    Case("no-base-model", no_base, lambda i: ["merge_method awd needs base_model"]),
    Case("base-path-missing", missing_base, lambda i: [f"model folder '{MISSING_BASE}' does not exist"]),
    Case("fine-tune-path-missing", set_model(1, lambda i: MISSING_FT), lambda i: [f"model folder '{MISSING_FT}' does not exist"]),
    Case("fine-tune-path-is-a-file", set_model(1, lambda i: str(i.family[2] / "config.json")),
         lambda i: [f"model '{i.family[2] / 'config.json'}' is a file, not a model folder"]),
    Case("other-architecture", set_model(2, lambda i: str(i.other_arch)),
         lambda i: [f"model {i.other_arch} is ['MistralForCausalLM']", "['LlamaForCausalLM']", "--allow-crimes"]),
    Case("tensor-shapes-differ", set_model(1, lambda i: str(i.wide)), shape_words),
    Case("unknown-merge-method", unknown_method, lambda i: ["'awdd'", "awd", "task_arithmetic"]),
]


def write_case_config(tmp_path: Path, case: Case, inputs: Inputs) -> Path:
    config = copy.deepcopy(base_config(inputs.family))
    case.edit(config, inputs)
    path = tmp_path / f"{case.id}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def prepare_out(tmp_path: Path, existing: bool) -> Tuple[Path, Optional[Dict[str, str]]]:
    out = tmp_path / "target" / "OUT"
    out.parent.mkdir(parents=True, exist_ok=True)
    if existing:
        fill_previous_output(out)
    return out, snapshot(out)


def assert_untouched(out: Path, before: Optional[Dict[str, str]]) -> None:
    assert snapshot(out) == before, "OUT changed"
    assert leftovers(out) == []


@pytest.mark.parametrize("existing", [False, True], ids=["out-absent", "out-holds-previous-merge"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_run_merge_rejects(tmp_path, inputs, case, existing):
    config = write_case_config(tmp_path, case, inputs)
    out, before = prepare_out(tmp_path, existing)
    with pytest.raises(case.error) as caught:
        run_merge(config, out, overwrite=existing, copy_tokenizer=False, quiet=True)
    assert type(caught.value) is case.error
    message = str(caught.value)
    for word in case.words(inputs) + ([str(config)] if case.names_config else []):
        assert word in message, f"{word!r} not in {message!r}"
    assert_untouched(out, before)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_cli_rejects(tmp_path, inputs, case, capsys):
    config = write_case_config(tmp_path, case, inputs)
    out, before = prepare_out(tmp_path, existing=True)
    capsys.readouterr()
    code = run([str(config), str(out), "--overwrite", "--no-copy-tokenizer", "--quiet"])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("Error: "), err
    for word in case.words(inputs) + ([str(config)] if case.names_config else []):
        assert word in err, f"{word!r} not in {err!r}"
    assert "Traceback" not in err
    assert_untouched(out, before)


# --------------------------------------------------------------------------- OUT itself


def test_non_empty_out_without_overwrite(tmp_path, inputs, capsys):
    config = tmp_path / "ok.yml"
    config.write_text(yaml.safe_dump(base_config(inputs.family)))
    out, before = prepare_out(tmp_path, existing=True)
    with pytest.raises(OutputExistsError) as caught:
        run_merge(config, out, copy_tokenizer=False, quiet=True)
    assert f"{out} exists and is not empty" in str(caught.value)
    assert "--overwrite" in str(caught.value) and "overwrite=True" in str(caught.value)
    assert_untouched(out, before)
    capsys.readouterr()
    assert run([str(config), str(out), "--no-copy-tokenizer", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert f"Error: {out} exists and is not empty" in err and "--overwrite" in err
    assert_untouched(out, before)


@pytest.mark.parametrize("overwrite", [False, True])
def test_out_is_a_file(tmp_path, inputs, capsys, overwrite):
    config = tmp_path / "ok.yml"
    config.write_text(yaml.safe_dump(base_config(inputs.family)))
    out = tmp_path / "OUT"
    out.write_bytes(b"not a folder\n")
    before = snapshot(out)
    with pytest.raises(OutputExistsError) as caught:
        run_merge(config, out, overwrite=overwrite, copy_tokenizer=False, quiet=True)
    assert str(caught.value) == f"{out} exists and is not a folder"
    assert_untouched(out, before)
    capsys.readouterr()
    argv = [str(config), str(out), "--no-copy-tokenizer", "--quiet"] + (["--overwrite"] if overwrite else [])
    assert run(argv) != 0
    assert f"Error: {out} exists and is not a folder" in capsys.readouterr().err
    assert_untouched(out, before)


def test_empty_out_folder_is_accepted(tmp_path, inputs):
    """The counterpart of the refusals: an existing but empty OUT is fine without overwrite."""
    config = tmp_path / "ok.yml"
    config.write_text(yaml.safe_dump(base_config(inputs.family)))
    out = tmp_path / "OUT"
    out.mkdir()
    run_merge(config, out, copy_tokenizer=False, quiet=True, write_model_card=False)
    assert (out / "model.safetensors").is_file() and leftovers(out) == []


# --------------------------------------------------------------------------- the config file itself


@pytest.mark.parametrize("kind", ["missing", "not-yaml", "not-a-mapping"])
def test_unreadable_config(tmp_path, kind, capsys):
    config = tmp_path / "merge.yml"
    if kind == "not-yaml":
        config.write_text("merge_method: awd\nmodels: [unclosed\n")
    elif kind == "not-a-mapping":
        config.write_text("- just\n- a list\n")
    out, before = prepare_out(tmp_path, existing=True)
    with pytest.raises(ConfigError) as caught:
        run_merge(config, out, overwrite=True)
    message = str(caught.value)
    assert str(config) in message
    assert {"missing": "does not exist", "not-yaml": "not valid YAML",
            "not-a-mapping": "expected a YAML mapping"}[kind] in message
    assert_untouched(out, before)
    capsys.readouterr()
    assert run([str(config), str(out), "--overwrite", "--quiet"]) != 0
    assert str(config) in capsys.readouterr().err
    assert_untouched(out, before)


def test_relative_path_into_an_existing_folder_is_a_missing_local_model(tmp_path, tiny_family, monkeypatch):
    """`fam/ft_9` with `fam/` present is a local path that does not exist, not a Hub id."""
    import shutil

    from mergekit_awd.pipeline.config import ConfigError
    from mergekit_awd.pipeline.runner import run_merge

    shutil.copytree(tiny_family[0], tmp_path / "fam" / "base")
    monkeypatch.chdir(tmp_path)
    config = {"merge_method": "awd", "base_model": "fam/base", "models": [{"model": "fam/ft_9"}]}
    with pytest.raises(ConfigError, match="model folder 'fam/ft_9' does not exist"):
        run_merge(config, tmp_path / "OUT")
    assert not (tmp_path / "OUT").exists()


def test_runtime_failure_is_one_clean_cli_error(tmp_path, tiny_family, capsys, monkeypatch):
    """A failure inside the merge (here: a full disk) is one error line, no traceback, OUT untouched."""
    import errno

    import yaml
    from mergekit.io.tensor_writer import TensorWriter

    from mergekit_awd.cli import run

    def full_disk(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(TensorWriter, "save_tensor", full_disk)
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump({"merge_method": "awd", "base_model": str(tiny_family[0]),
                                      "models": [{"model": str(p)} for p in tiny_family[1:]]}))
    assert run([str(config), str(tmp_path / "OUT"), "--quiet", "--no-copy-tokenizer"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "Traceback" not in err and "was left as it was" in err
    assert not (tmp_path / "OUT").exists()
