"""TSV-C → PEFT LoRA adapters (``mergekit-awd compress``): adapters load with PEFT and reproduce logits."""

import json
from pathlib import Path

import pytest
import torch
import yaml

from mergekit_awd.cli import run
from mergekit_awd.tools.compress import compress_family

IDS = torch.tensor([[1, 5, 9, 20, 33, 7, 100, 4]])


def write_config(tmp_path: Path, paths, name="family.yml") -> Path:
    config = {"merge_method": "tsv", "base_model": str(paths[0]), "models": [{"model": str(p)} for p in paths[1:]]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


def logits(folder, adapter=None) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder))
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    with torch.no_grad():
        return model(IDS).logits.double()


@pytest.fixture(scope="module")
def family_logits(tiny_family):
    return [logits(p) for p in tiny_family]


def test_default_rank_adapters_load_and_reproduce_logits_within_the_reported_error(
        tmp_path, tiny_family, family_logits):
    out = tmp_path / "adapters"
    assert run(["compress", str(write_config(tmp_path, tiny_family)), str(out)]) == 0
    report = json.loads((out / "compress_report.json").read_text())
    assert sorted(report["adapters"]) == ["ft_0", "ft_1", "ft_2"]
    base_logits = family_logits[0]
    for i, name in enumerate(["ft_0", "ft_1", "ft_2"]):
        entry = report["adapters"][name]
        config = json.loads((out / name / "adapter_config.json").read_text())
        assert config["r"] == config["lora_alpha"] == 21  # ⌊64 / 3⌋ for the 64 × 64 matrices
        assert entry["lora_modules"] == 16  # 14 block linears + embeddings + LM head
        assert sorted(entry["full_modules"]) == sorted(config["modules_to_save"])
        assert 0 < entry["size_ratio"] < 1 and 0 < entry["relative_error_lora"] < 1
        fine_tuned = family_logits[i + 1]
        adapted = logits(tiny_family[0], out / name)
        relative = float((adapted - fine_tuned).norm() / (fine_tuned - base_logits).norm())
        assert relative <= entry["relative_error_lora"]
        assert relative > 0.1 * entry["relative_error_lora"]  # the adapter is truly rank-limited


def test_full_rank_adapters_reproduce_logits_exactly(tmp_path, tiny_family, family_logits):
    out = tmp_path / "full"
    report = compress_family(write_config(tmp_path, tiny_family), str(out), fraction=1.0)
    entry = report["adapters"]["ft_1"]
    assert entry["relative_error_total"] < 1e-6
    adapted = logits(tiny_family[0], out / "ft_1")
    torch.testing.assert_close(adapted, family_logits[2], atol=1e-5, rtol=0)


def test_rank_option_and_lowrank_svd(tmp_path, tiny_family):
    out = tmp_path / "r8"
    report = compress_family(write_config(tmp_path, tiny_family), str(out), rank=8, svd="lowrank")
    config = json.loads((out / "ft_0" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["rank_pattern"] == {}
    exact = compress_family(write_config(tmp_path, tiny_family), str(tmp_path / "r8e"), rank=8)
    a, b = report["adapters"]["ft_0"], exact["adapters"]["ft_0"]
    assert b["relative_error_lora"] <= a["relative_error_lora"] <= b["relative_error_lora"] * 1.1


def _save_biased_family(root: Path):
    """Tiny LLaMA with attention biases: base and one fine-tune whose weights and biases moved."""
    from transformers import LlamaForCausalLM

    from mergekit_awd.testing.synthetic import TINY, llama_config

    config = llama_config(TINY)
    config.attention_bias = True
    torch.manual_seed(3)
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(root / "base"))
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.add_(0.02 * (param.abs().mean() + 0.1) * torch.randn(param.shape, generator=g))
    model.save_pretrained(str(root / "ft"))
    return [root / "base", root / "ft"]


def test_linear_biases_travel_as_lora_bias_and_embeddings_in_full(tmp_path):
    paths = _save_biased_family(tmp_path / "fam")
    out = tmp_path / "biased"
    report = compress_family(write_config(tmp_path, paths), str(out), fraction=1.0)
    entry = report["adapters"]["ft"]
    config = json.loads((out / "ft" / "adapter_config.json").read_text())
    assert config["lora_bias"] is True and entry["lora_bias"] is True
    assert "model.embed_tokens" in config["modules_to_save"]
    torch.testing.assert_close(logits(paths[0], out / "ft"), logits(paths[1]), atol=1e-5, rtol=0)


def test_bad_inputs(tmp_path, tiny_family, capsys):
    config = write_config(tmp_path, tiny_family)
    assert run(["compress", str(config), str(tmp_path / "x"), "--rank", "4", "--fraction", "0.5"]) != 0
    assert "rank or fraction" in capsys.readouterr().err
    assert run(["compress", str(config), str(tmp_path / "y"), "--rank", "0"]) != 0
    assert "rank must be" in capsys.readouterr().err
    missing = tmp_path / "missing.yml"
    missing.write_text(yaml.safe_dump({"merge_method": "tsv", "base_model": str(tiny_family[0]),
                                       "models": [{"model": str(tmp_path / "nope")}]}))
    assert run(["compress", str(missing), str(tmp_path / "z")]) != 0
    assert "does not exist" in capsys.readouterr().err
    out = tmp_path / "once"
    compress_family(config, str(out), rank=2)
    with pytest.raises(FileExistsError):
        compress_family(config, str(out), rank=2)
