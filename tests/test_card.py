"""The model card written after a merge: mergekit's text kept, AWD figures and Hub metadata added."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData

from hub_server import metadata_errors
from mergekit_awd.constants import CARD_HEATMAP
from mergekit_awd.core.awd import TASK_ARITHMETIC_LAMBDA, AWDParameters
from mergekit_awd.pipeline.config import load_config
from mergekit_awd.pipeline.runner import run_merge
from mergekit_awd.presentation.card import SECTION_BEGIN, hub_model_ids, write_model_card
from mergekit_awd.testing.synthetic import awd_config

DEFAULT_ALPHA, DEFAULT_LAMBDA = AWDParameters.alpha, TASK_ARITHMETIC_LAMBDA

BASE_README = "---\nlicense: apache-2.0\nlanguage:\n- en\n---\n# A tiny base model\n"
MERGEKIT_README = """---
base_model: []
library_name: transformers
tags:
- mergekit
- merge

---
# merged

This is a merge of pre-trained language models created using [mergekit](https://github.com/cg123/mergekit).
"""


@pytest.fixture(scope="module")
def merged(tiny_family, tmp_path_factory) -> Path:
    """An awd merge whose base model's card states a license."""
    root = tmp_path_factory.mktemp("card")
    base = root / "base"
    shutil.copytree(tiny_family[0], base)
    (base / "README.md").write_text(BASE_README)
    out = root / "out"
    run_merge(awd_config([base, *tiny_family[1:]], parameters={"steps": 20}), out)
    return out


def table_rows(text: str):
    """(i, j, before, after) from the card's cosine table."""
    rows = re.findall(r"^\| (\S+) \| (\S+) \| ([0-9.]+) \| ([0-9.]+) \|$", text, re.MULTILINE)
    return [(i, j, float(b), float(a)) for i, j, b, a in rows]


def test_card_keeps_mergekit_text_and_parses(merged):
    card = ModelCard.load(merged / "README.md")
    assert "created using [mergekit](https://github.com/cg123/mergekit)" in card.text
    assert "The following YAML configuration was used to produce this model:" in card.text
    assert "[AWD Task Arithmetic (Adaptive Weight Disentanglement)](https://arxiv.org/abs/2411.18729)" in card.text
    for name, value in (("α (weight of ‖δ‖)", str(DEFAULT_ALPHA)), ("λ (scale of Σ wᵢ τ̂ᵢ)", str(DEFAULT_LAMBDA)),
                        ("solver", "reduced"), ("scope", "tensor")):
        assert f"| {name} | {value} |" in card.text


def test_metadata_validates(merged):
    card = ModelCard.load(merged / "README.md")
    data = card.data.to_dict()
    assert set(data["tags"]) >= {"mergekit", "merge", "awd"}
    assert data["library_name"] == "transformers"
    assert data["license"] == "apache-2.0"  # from the base model's card
    assert "base_model" not in data  # every input is a local folder: no Hub ids to list
    assert metadata_errors(str(card)) == []
    ModelCardData(**data)  # the typed metadata accepts every field as written


def test_cosine_table_is_the_mean_of_the_report_matrices(merged):
    report = json.loads((merged / "awd_report.json").read_text())
    solved = [s for s in report["scopes"].values() if s["active"] >= 2]
    before = torch.tensor([s["abs_cos_before"] for s in solved]).mean(0)
    after = torch.tensor([s["abs_cos_after"] for s in solved]).mean(0)
    rows = table_rows((merged / "README.md").read_text())
    assert [(i, j) for i, j, _, _ in rows] == [("ft_0", "ft_1"), ("ft_0", "ft_2"), ("ft_1", "ft_2")]
    for (_, _, b, a), (i, j) in zip(rows, [(0, 1), (0, 2), (1, 2)]):
        assert b == pytest.approx(float(before[i, j]), abs=5e-5)
        assert a == pytest.approx(float(after[i, j]), abs=5e-5)
    assert max(b for *_, b, _ in rows) > 0.1 > max(a for *_, a in rows)  # AWD decorrelated them


def test_heatmap_png_is_a_real_image_referenced_by_the_card(merged):
    from matplotlib.image import imread

    path = merged / CARD_HEATMAP
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 200
    assert float(pixels[..., :3].std()) > 0.05  # not a blank canvas
    assert f"]({CARD_HEATMAP})" in (merged / "README.md").read_text()


def test_writing_again_replaces_the_section(merged, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(merged, out)
    config, _, _ = load_config(str(out / "mergekit_config.yml"))
    report = json.loads((out / "awd_report.json").read_text())
    write_model_card(str(out), config, report)
    text = (out / "README.md").read_text()
    assert text.count(SECTION_BEGIN) == 1
    assert text.count("created using [mergekit]") == 1


def test_hub_ids_become_base_model_metadata(merged, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(MERGEKIT_README)
    config, _, _ = load_config({
        "merge_method": "awd", "base_model": "org/base-model",
        "models": [{"model": "org/fine-tune-a"}, {"model": str(tmp_path)}, {"model": "org/fine-tune-b"}],
    })
    assert hub_model_ids(config) == ["org/base-model", "org/fine-tune-a", "org/fine-tune-b"]
    report = json.loads((merged / "awd_report.json").read_text())
    # this report came from another merge: without its per-scope model names the card labels
    # the rows in the configuration's order
    for scope in report["scopes"].values():
        scope.pop("models")
    write_model_card(str(out), config, report)
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == ["org/base-model", "org/fine-tune-a", "org/fine-tune-b"]
    assert card.data.to_dict()["base_model_relation"] == "merge"
    assert metadata_errors(str(card)) == []
    labels = [(i, j) for i, j, _, _ in table_rows(card.text)]
    assert labels[0] == ("org/fine-tune-a", tmp_path.name)


def test_tsv_merge_card_has_the_interference_figures(tiny_family, tmp_path):
    out = tmp_path / "out"
    config = {"merge_method": "tsv", "base_model": str(tiny_family[0]), "dtype": "float32",
              "models": [{"model": str(p)} for p in tiny_family[1:]]}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny SVDs: thread start-up would dominate on a busy machine
    try:
        run_merge(config, out)
    finally:
        torch.set_num_threads(threads)
    report = json.loads((out / "tsv_report.json").read_text())
    sti = [entry["sti"] for entry in report["interference"].values()]
    card = ModelCard.load(out / "README.md")
    match = re.search(r"summed over the (\d+) task matrices: ([0-9.e+-]+)", card.text)
    assert match and int(match.group(1)) == len(sti) == 14
    assert float(match.group(2)) == pytest.approx(sum(sti), rel=1e-5)
    assert "[Task Singular Vectors Merge (TSV-M)](https://arxiv.org/abs/2412.00081)" in card.text
    assert "tsv" in card.data.tags and metadata_errors(str(card)) == []
    assert not (out / CARD_HEATMAP).exists()  # no AWD solve, so no cosine heatmap


def test_no_card_when_mergekit_wrote_none(tiny_family, tmp_path):
    out = tmp_path / "out"
    run_merge(awd_config(tiny_family, parameters={"steps": 5}), out, write_model_card=False)
    assert not (out / "README.md").exists() and not (out / CARD_HEATMAP).exists()
    assert (out / "awd_report.json").exists()
