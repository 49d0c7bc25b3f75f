"""The package's architecture holds (issue #11): one home per rule, methods own their story.

Each test states a rule of the redesign and fails when code breaks it: specs come from the core
settings (and the core and the YAML accept the same values), generic modules name no method,
click stays in the CLI, errors share one root, modules stay small, results are typed.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect as pyinspect
import json
from pathlib import Path

import pytest
import yaml
from mergekit.merge_methods.base import ParameterScope
from pydantic import ValidationError

import mergekit_awd
from mergekit_awd import errors
from mergekit_awd.core.settings import setting_fields
from mergekit_awd.mergekit_adapter.registration import method_for, our_methods
from mergekit_awd.testing.synthetic import merge_config

PACKAGE = Path(mergekit_awd.__file__).parent


def package_modules():
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


# --------------------------------------------------------------------------- settings → specs


@pytest.mark.parametrize("method", our_methods(), ids=lambda m: m.spec.name)
def test_specs_are_generated_from_the_core_settings(method):
    fields = [f for f in setting_fields(method.settings_class) if f.info.exposed]
    specs = {p.name: p for p in method.spec.parameters}
    extra = {p.name for p in method.extra_parameter_specs()}
    assert set(specs) == {"weight"} | {f.name for f in fields} | extra
    assert specs["weight"].scope == ParameterScope.NON_BASE
    for item in fields:
        assert specs[item.name].default == item.default, item.name
        assert specs[item.name].description.startswith(item.info.description), item.name


CASES = [  # (method, parameter, value, accepted)
    ("awd", "steps", 0, False), ("awd", "steps", 1, True), ("awd", "steps", 10_000, True),
    ("awd", "steps", 10_001, False), ("awd", "steps", True, False), ("awd", "alpha", -0.1, False),
    ("awd", "alpha", 0.0, True), ("awd", "lr", 0.0, False), ("awd", "optimizer", "lbfgs", False),
    ("awd", "optimizer", "sgd", True), ("awd", "momentum", 1.0, False), ("awd", "scope", "row", True),
    ("awd", "optimizer", "gd", True), ("awd", "select", "matrices", True), ("awd", "lambda", float("inf"), False),
    ("tsv", "fraction", 0.0, False), ("tsv", "fraction", 1.0, True), ("tsv", "fraction", 1.01, False),
    ("tsv", "svd", "lowrank", True), ("tsv", "svd", "fast", False), ("tsv", "oversample", -1, False),
    ("tsv", "power_iters", 1001, False), ("tsv", "disentangle", 1, False), ("tsv", "steps", 0, False),
    ("wudi", "solver", "exact", True), ("wudi", "solver", "sgd", False), ("wudi", "steps", 0, False),
    ("wudi", "lr", -1e-5, False), ("iso_c", "select", "matrices", True), ("iso_c", "lambda", float("nan"), False),
    ("iso_cts", "common_space_fraction", 1.0, True), ("iso_cts", "common_space_fraction", 1.1, False),
    ("iso_cts", "common_space_fraction", True, False),
    ("ace", "eps", 0.0, True), ("ace", "eps", -1e-3, False), ("ace", "k_frac", 1.0, True), ("ace", "k_frac", 1.1, False),
    ("ace", "gamma_threshold", -0.1, False), ("ace", "b_update", "uncentred", True), ("ace", "b_update", "raw", False),
    ("ace", "prior", "mean_covariance", True), ("ace", "lambda", float("inf"), False),
]


@pytest.mark.parametrize("method_name,name,value,accepted", CASES)
def test_core_and_yaml_accept_the_same_values(method_name, name, value, accepted):
    """The core dataclass and mergekit's spec (generated from it) agree at every boundary."""
    method = method_for(method_name)
    spec = next(p for p in method.spec.parameters if p.name == name)
    from mergekit_awd.pipeline.validation import check_parameters
    from mergekit_awd.pipeline.config import load_config

    config, _, label = load_config(merge_config(method_name, ["base", "a", "b"], {name: value}))
    core_ok = yaml_ok = True
    try:
        method.settings({name: value})
    except ValueError:
        core_ok = False
    try:
        spec.validate(value)
        check_parameters(config, method, label)
    except (ValidationError, ValueError):
        yaml_ok = False
    assert (core_ok, yaml_ok) == (accepted, accepted)


# --------------------------------------------------------------------------- one home per concern


GENERIC_MODULES = ["mergekit_adapter/report.py", "mergekit_adapter/planner.py", "mergekit_adapter/specs.py",
                   "mergekit_adapter/method.py", "mergekit_adapter/card_parts.py", "presentation/card.py",
                   "presentation/card_sections.py", "tools/inspect.py", "pipeline/runner.py"]


@pytest.mark.parametrize("module", GENERIC_MODULES)
def test_generic_modules_hold_no_method_names(module):
    tree = ast.parse((PACKAGE / module).read_text())
    names = {m.spec.name for m in our_methods()}
    literals = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in names]
    assert literals == [], f"{module} names methods {literals}: ask the method (PackageMergeMethod) instead"


def test_every_card_part_a_method_names_is_drawn_by_presentation():
    """Methods describe their card as data (``card_parts``); ``presentation`` draws every kind."""
    from mergekit_awd.mergekit_adapter.card_parts import CardPart
    from mergekit_awd.presentation.card_sections import PART_LINES

    assert set(PART_LINES) == set(CardPart)
    assert all(method.card_parts for method in our_methods())
    assert not any(hasattr(method, "card_lines") for method in our_methods())


def test_click_is_imported_only_under_the_cli_package():
    offenders = []
    for path in package_modules():
        relative = path.relative_to(PACKAGE)
        for node in ast.walk(ast.parse(path.read_text())):
            imported = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "click" or name.startswith("click.") for name in imported) and relative.parts[0] != "cli":
                offenders.append(str(relative))
    assert offenders == []


def test_no_package_module_is_over_450_lines():
    long = {str(p.relative_to(PACKAGE)): n for p in package_modules() if (n := len(p.read_text().splitlines())) > 450}
    assert long == {}


def test_no_function_in_the_package_is_over_80_lines():
    """A function tells one step of the story (decorators and docstring included)."""
    long = [f"{path.relative_to(PACKAGE)}:{node.name} {node.end_lineno - node.lineno + 1}"
            for path in package_modules() for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80]
    assert long == []


def _code_lines(path: Path):
    """(line number, the line without indentation) of code lines: no blanks, comments, imports,
    docstring-like string lines or lone punctuation."""
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        line = " ".join(raw.split())
        if (len(line) > 3 and not line.startswith(("#", "import ", "from ", '"', "'", "@"))
                and line.strip("()[]{},:") != ""):
            yield number, line


def test_no_block_of_six_lines_is_repeated_in_the_package():
    """One home per rule: no run of six identical code lines stands twice in the package."""
    seen, repeated = {}, []
    for path in package_modules():
        lines = list(_code_lines(path))
        for start in range(len(lines) - 5):
            key = tuple(line for _, line in lines[start:start + 6])
            where = f"{path.relative_to(PACKAGE)}:{lines[start][0]}"
            if key in seen and not seen[key].startswith(f"{path.relative_to(PACKAGE)}:"):
                repeated.append(f"{where} ~ {seen[key]}")
            seen.setdefault(key, where)
    assert repeated == []


def test_every_error_class_has_the_one_root():
    classes = [c for _, c in pyinspect.getmembers(errors, pyinspect.isclass) if issubclass(c, Exception)]
    assert len(classes) >= 10
    assert all(issubclass(c, errors.MergekitAwdError) for c in classes)


def test_errors_raised_in_the_package_have_the_one_root():
    """Every ``raise SomeError(...)`` in the package raises one of ``errors``' classes (or re-raises)."""
    allowed = {name for name, c in pyinspect.getmembers(errors, pyinspect.isclass)} | {
        "MergeInterrupted", "InterruptedAfterSwap",  # KeyboardInterrupt: an interrupt, not an error
        "NotImplementedError",  # the abstract method of PackageMergeMethod
        "TypeError",  # a programming error: an error constructed with a field it does not declare
        "ClickException", "UsageError",  # the CLI's own
    }
    raised = []
    for path in package_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
                func = node.exc.func
                name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
                if name and name[0].isupper() and name not in allowed:
                    raised.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert raised == []


def test_curated_all_names_exist():
    for module in (mergekit_awd, mergekit_awd.core, mergekit_awd.pipeline, mergekit_awd.tools,
                   mergekit_awd.mergekit_adapter, mergekit_awd.presentation, mergekit_awd.hub, errors):
        assert module.__all__ and all(hasattr(module, name) for name in module.__all__), module.__name__


def test_each_method_names_its_own_report_file():
    """A method's report file is part of its self-description (``report_filename``), one per method
    (iso_c and iso_cts share theirs) and never one of the package's other files."""
    from mergekit_awd import constants

    others = {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str)}
    names = {method.report_filename for method in our_methods()}
    assert all(name.endswith("_report.json") and name not in others for name in names)
    assert len(names) == len({method.name.split("_")[0] for method in our_methods()})


def test_file_names_live_in_constants():
    """Every other file name the package writes or reads has one home, ``constants``."""
    from mergekit_awd import constants

    names = {v for k, v in vars(constants).items() if k.isupper() and isinstance(v, str) and "." in v}
    offenders = []
    for path in package_modules():
        if path.name == "constants.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                offenders.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.value}")
    assert offenders == []


# --------------------------------------------------------------------------- inspect and results


def test_inspect_uses_the_solver_settings_of_a_tsv_disentangle_config(tiny_family):
    config = merge_config("tsv", tiny_family, {"disentangle": True, "alpha": 0.2, "steps": 7}, "float32")
    report = mergekit_awd.inspect_merge(config, tsv=False)
    assert report.settings["alpha"] == 0.2 and report.settings["steps"] == 7


def test_results_are_typed_dataclasses_with_their_json(tiny_family, tmp_path):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("awd", tiny_family, {"steps": 5}, "float32")))
    outcome = mergekit_awd.run_merge(config, tmp_path / "out", copy_tokenizer=False, quiet=True)
    report = mergekit_awd.inspect_merge(config, tsv=False)
    for result in (outcome, outcome.report, report):
        assert dataclasses.is_dataclass(result)
        assert json.loads(json.dumps(result.to_json())) == json.loads(json.dumps(result))
    assert outcome.report.summary["disentangled_tensors"] > 0
    written = json.loads((tmp_path / "out" / "awd_report.json").read_text())
    assert written == json.loads(json.dumps(outcome.report.to_json()))


def test_methods_command_lists_every_method_with_its_parameters(capsys):
    from mergekit_awd.cli import run

    assert run(["methods"]) == 0
    printed = capsys.readouterr().out
    for method in our_methods():
        assert f"{method.spec.name}: {method.spec.pretty_name}" in printed
        for spec in method.spec.parameters:
            assert f"  {spec.name} " in printed, (method.spec.name, spec.name)
    assert run(["methods", "nope"]) == 1 and "unknown method 'nope'" in capsys.readouterr().err
