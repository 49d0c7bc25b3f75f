"""``mergekit-awd inspect``: its numbers against a direct computation on the tiny models."""

import json
import re
from collections import defaultdict

import pytest
import torch
import yaml

from conftest import load_state
from mergekit_awd.cli import run
from mergekit_awd.core.awd import SolverSettings, solve_reduced
from mergekit_awd.core.task_vectors import gram_matrix
from mergekit_awd.core.tsv import singular_task_interference
from mergekit_awd.constants import INSPECT_COSINES_PNG as COSINES_PNG
from mergekit_awd.constants import INSPECT_LAYERS_PNG as LAYERS_PNG
from mergekit_awd.constants import INSPECT_REPORT as REPORT_FILENAME
from mergekit_awd.tools.inspect import inspect_merge
from mergekit_awd.testing.synthetic import awd_config

PARAMETERS = {"alpha": 0.02, "steps": 40, "lr": 0.02}
SETTINGS = SolverSettings(alpha=0.02, steps=40, lr=0.02)
BLOCK_MATRIX = re.compile(r"^model\.layers\.(\d+)\.")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The matrices here are tiny: thread start-up would dominate each SVD on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def family_config(tiny_family):
    return awd_config(tiny_family, parameters=PARAMETERS)


@pytest.fixture(scope="module")
def report(family_config):
    return inspect_merge(family_config)


@pytest.fixture(scope="module")
def direct(tiny_family):
    """Task vectors of the 2-D tensors inside numbered blocks, grouped by layer, straight from disk."""
    base = load_state(tiny_family[0])
    models = [load_state(p) for p in tiny_family[1:]]
    layers = defaultdict(dict)
    for name, value in base.items():
        match = BLOCK_MATRIX.match(name)
        if match and value.ndim == 2:
            layers[match.group(1)][name] = torch.stack([m[name] - value for m in models])
    return layers


def abs_cos(vectors: torch.Tensor) -> torch.Tensor:
    """|cos| between the rows of a [K, n] float64 matrix."""
    unit = vectors / vectors.norm(dim=1, keepdim=True)
    return (unit @ unit.T).abs()


def mean_offdiag(matrix: torch.Tensor) -> float:
    k = matrix.shape[0]
    return float((matrix.sum() - matrix.diagonal().sum()) / (k * (k - 1)))


def test_selects_the_block_matrices(report, direct):
    expected = {name for layer in direct.values() for name in layer}
    selected = {name for name, entry in report["tensors"].items() if entry["selected"]}
    assert selected == expected and len(expected) == 14
    assert list(report["layers"]) == ["0", "1"]
    assert report["labels"] == ["ft_0", "ft_1", "ft_2"]
    assert report["settings"]["alpha"] == 0.02 and report["settings"]["scope"] == "tensor"


def test_cosines_per_layer_and_whole_set(report, direct):
    everything = []
    for layer, tensors in direct.items():
        concatenated = torch.cat([tv.reshape(3, -1).double() for tv in tensors.values()], dim=1)
        everything.append(concatenated)
        expected = abs_cos(concatenated)
        got = torch.tensor(report["layers"][layer]["abs_cos"], dtype=torch.float64)
        assert torch.allclose(got, expected, atol=1e-5)
        assert report["layers"][layer]["tensors"] == len(tensors)
    whole = abs_cos(torch.cat(everything, dim=1))
    assert torch.allclose(torch.tensor(report["whole"]["abs_cos"], dtype=torch.float64), whole, atol=1e-5)
    assert report["whole"]["mean_abs_cos"] == pytest.approx(mean_offdiag(whole), abs=1e-5)


def test_awd_with_one_delta_over_the_whole_set(report, direct):
    tensors = [tv for layer in direct.values() for tv in layer.values()]
    flat = torch.cat([tv.reshape(3, -1).double() for tv in tensors], dim=1)
    model = report["whole"]["model_scope"]
    delta = torch.tensor(model["coefficients"], dtype=torch.float64) @ flat  # δ = Σ β_k τ_k
    after = abs_cos(flat - delta)
    assert torch.allclose(torch.tensor(model["abs_cos_after"], dtype=torch.float64), after, atol=1e-5)
    assert model["mean_abs_cos_after"] == pytest.approx(mean_offdiag(after), abs=1e-5)
    assert model["delta_norm_ratio"] == pytest.approx(float(delta.norm() / flat.norm(dim=1).mean()), rel=1e-5)
    reference = solve_reduced(sum(gram_matrix(tv) for tv in tensors), SETTINGS)
    assert model["mean_abs_cos_after"] == pytest.approx(reference.mean_abs_cos_after, abs=1e-6)
    assert model["mean_abs_cos_after"] < 0.1 * model["mean_abs_cos_before"]


def test_awd_per_tensor_and_tsv_interference(report, direct):
    whole_after, whole_ratio, whole_sti = [], [], 0.0
    for layer, tensors in direct.items():
        solves = [solve_reduced(gram_matrix(tv), SETTINGS) for tv in tensors.values()]
        sti = sum(singular_task_interference(list(tv)) for tv in tensors.values())
        scope = report["layers"][layer]["tensor_scope"]
        assert scope["mean_abs_cos_after"] == pytest.approx(
            sum(s.mean_abs_cos_after for s in solves) / len(solves), abs=1e-6)
        assert scope["delta_norm_ratio"] == pytest.approx(sum(s.delta_norm_ratio for s in solves) / len(solves),
                                                          rel=1e-5)
        assert report["layers"][layer]["sti"] == pytest.approx(sti, rel=1e-5)
        whole_after += [s.mean_abs_cos_after for s in solves]
        whole_ratio += [s.delta_norm_ratio for s in solves]
        whole_sti += sti
    whole = report["whole"]
    assert whole["tensor_scope"]["mean_abs_cos_after"] == pytest.approx(sum(whole_after) / 14, abs=1e-6)
    assert whole["tensor_scope"]["delta_norm_ratio"] == pytest.approx(sum(whole_ratio) / 14, rel=1e-5)
    assert whole["sti"] == pytest.approx(whole_sti, rel=1e-5) and whole_sti > 0


def test_command_prints_a_table_and_writes_json_and_heatmaps(family_config, report, tmp_path, capsys):
    from matplotlib.image import imread

    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(family_config))
    out = tmp_path / "inspect"
    assert run(["inspect", str(config), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^layer 0\s+7\s", printed, re.MULTILINE)
    assert re.search(r"^all selected\s+14\s", printed, re.MULTILINE)
    assert f"{report['whole']['mean_abs_cos']:.4f}" in printed
    assert sorted(p.name for p in out.iterdir()) == sorted([REPORT_FILENAME, COSINES_PNG, LAYERS_PNG])
    written = json.loads((out / REPORT_FILENAME).read_text())
    assert written == json.loads(json.dumps(report))
    for png in (COSINES_PNG, LAYERS_PNG):
        pixels = imread(out / png)
        assert pixels.ndim == 3 and min(pixels.shape[:2]) > 100


def test_needs_a_base_model(tiny_family, tmp_path, capsys):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump({"merge_method": "linear", "dtype": "float32", "models": [
        {"model": str(p), "parameters": {"weight": 1.0}} for p in tiny_family[1:]]}))
    assert run(["inspect", str(config)]) == 1
    assert "needs a base_model" in capsys.readouterr().err


@pytest.mark.parametrize("scope", ["tensor", "model", "row"])
def test_inspect_and_merge_report_the_same_figures_for_a_bfloat16_config(tiny_family, tmp_path, scope):
    """float32 models merged with `dtype: bfloat16`: mergekit casts every input to bfloat16 before the
    method sees it; inspect reads its tensors the same way, so the figures agree exactly."""
    from mergekit_awd.pipeline.runner import run_merge

    config = awd_config(tiny_family, {"scope": scope, "alpha": 0.01}, dtype="bfloat16")
    inspected = inspect_merge(config)
    merged = run_merge(config, str(tmp_path / "out")).report
    if scope == "row":  # the rows' figures of every selected 2-D tensor, as the merge solved them
        names = [n for n, t in inspected["tensors"].items() if t["selected"] and len(t["shape"]) == 2]
        assert names
        for name in names:
            ours = {k: v for k, v in merged["scopes"][name].items() if k not in ("tensors", "models")}
            assert ours == inspected["tensors"][name]["row_scope"]
        whole = inspected["whole"]["row_scope"]
        assert whole["solved_tensors"] == len(names)
        assert whole["mean_abs_cos_after"] < whole["mean_abs_cos_before"]
        from mergekit_awd.tools.inspect import format_report

        assert "One δ per output row (scope: row), " in format_report(inspected)
    elif scope == "tensor":
        names = [n for n, t in inspected["tensors"].items() if t["selected"]]
        assert names
        for name in names:
            assert merged["scopes"][name]["abs_cos_before"] == inspected["tensors"][name]["abs_cos"]
            assert merged["scopes"][name]["mean_abs_cos_after"] == inspected["tensors"][name]["mean_abs_cos_after"]
    else:
        for ours, theirs in ((merged["scopes"]["model"]["abs_cos_before"], inspected["whole"]["abs_cos"]),
                             (merged["scopes"]["model"]["abs_cos_after"],
                              inspected["whole"]["model_scope"]["abs_cos_after"])):
            assert torch.allclose(torch.tensor(ours, dtype=torch.float64), torch.tensor(theirs, dtype=torch.float64),
                                  rtol=0, atol=1e-12)
