"""A new user's first run (issue #13): devices are checked before anything is read (``--cuda`` on a
machine without CUDA is one line and exit 1, before a missing model is noticed), no deprecation
noise from mergekit's calls, LoRA inputs without extra flags."""

from __future__ import annotations

import pytest
import torch
import yaml

from mergekit_awd.cli import run
from mergekit_awd.errors import DeviceError
from mergekit_awd.pipeline.devices import check_device

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")


@pytest.fixture
def config_with_missing_models(tmp_path):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump({"merge_method": "awd", "base_model": str(tmp_path / "no-base"),
                                      "models": [{"model": str(tmp_path / "no-ft")}], "dtype": "float32"}))
    return config


@NO_CUDA
@pytest.mark.parametrize("argv,asked", [(["--cuda"], "--cuda"), (["--device", "cuda:1"], "--device cuda:1")])
def test_merge_refuses_a_missing_device_before_reading_anything(config_with_missing_models, tmp_path, capsys,
                                                                 argv, asked):
    out = tmp_path / "out"
    assert run([str(config_with_missing_models), str(out), *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {asked} asks for CUDA") and "CPU only" in err and err.count("\n") == 1
    assert "does not exist" not in err and not out.exists()


@NO_CUDA
@pytest.mark.parametrize("command", ["compress", "inspect"])
def test_compress_and_inspect_check_their_device_first(config_with_missing_models, tmp_path, capsys, command):
    argv = [command, str(config_with_missing_models)] + ([str(tmp_path / "out")] if command == "compress" else [])
    assert run([*argv, "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert "--device cuda asks for CUDA" in err and "does not exist" not in err


def test_check_device_accepts_the_cpu_and_names_bad_spellings():
    check_device("cpu")
    check_device(None)
    with pytest.raises(DeviceError, match="not a torch device"):
        check_device("gpu0")


def test_cli_merge_prints_no_transformers_deprecation_noise(tmp_path, tiny_family):
    """A fresh process (transformers warns once per process), with the tokenizer copied as by default."""
    import os
    import subprocess
    import sys

    from mergekit_awd.testing.synthetic import merge_config

    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config("awd", tiny_family, {"steps": 5}, "float32")))
    done = subprocess.run([sys.executable, "-m", "mergekit_awd.cli", str(config), str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "is deprecated" not in done.stdout + done.stderr


def test_a_lora_input_merges_without_extra_flags_and_leaves_no_cache(tmp_path, tiny_family, lora_adapter, capsys):
    """``model: base+lora`` (mergekit's syntax) merges with no --lora-merge-cache (issue #13, item 2)."""
    import tempfile
    from pathlib import Path

    from mergekit_awd.testing.synthetic import merge_config

    def caches():
        return sorted(p.name for p in Path(tempfile.gettempdir()).glob("mergekit-awd-lora-*"))

    before = caches()
    config_dict = merge_config("awd", tiny_family, {"steps": 5}, "float32")
    config_dict["models"][0]["model"] = f"{tiny_family[1]}+{lora_adapter}"
    config = tmp_path / "lora.yml"
    config.write_text(yaml.safe_dump(config_dict))
    assert run([str(config), str(tmp_path / "out"), "--no-copy-tokenizer", "--quiet"]) == 0, capsys.readouterr().err
    assert (tmp_path / "out" / "model.safetensors").is_file() and caches() == before


def test_a_task_negation_reports_that_delta_has_no_effect(tmp_path, tiny_family, capsys):
    """Weights summing to zero: θ_base + λ Σ w_i (τ_i − δ) = θ_base + λ Σ w_i τ_i, so the report counts
    no disentangled tensor and says why; the merge equals task arithmetic (issue #13, item 4)."""
    import json

    from conftest import load_state
    from mergekit_awd.testing.synthetic import merge_config

    paths = tiny_family[:3]
    for method, name in (("awd", "awd"), ("task_arithmetic", "ta")):
        config = tmp_path / f"{name}.yml"
        parameters = {"steps": 5, "lambda": 0.5} if method == "awd" else {"lambda": 0.5}
        config.write_text(yaml.safe_dump(merge_config(method, paths, parameters, "float32", weights=[1.0, -1.0])))
        assert run([str(config), str(tmp_path / name), "--no-copy-tokenizer"]) == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "awd" / "awd_report.json").read_text())["summary"]
    assert summary["disentangled_tensors"] == 0 and summary["tensors_where_delta_cancels"] == 14
    assert "δ cancels out of the merge on 14 tensors" in printed and "over 0 disentangled" not in printed
    awd, ta = load_state(tmp_path / "awd"), load_state(tmp_path / "ta")
    for key in awd:
        torch.testing.assert_close(awd[key], ta[key], atol=1e-6, rtol=1e-5)


def test_a_lora_only_on_q_and_v_family_reports_the_right_tensor_count(tmp_path, tiny_family, lora_adapter, capsys):
    """Two LoRA adapters (q_proj, v_proj) on the base: only the 2 × 2 q/v matrices have task vectors,
    so the report and the console line count 4 disentangled tensors, not every selected tensor."""
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    from mergekit_awd.testing.synthetic import TINY, merge_config

    torch.manual_seed(1)
    second = tmp_path / "adapter2"
    peft_model = get_peft_model(LlamaForCausalLM.from_pretrained(str(tiny_family[0])),
                                LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           init_lora_weights=False))
    peft_model.save_pretrained(str(second))
    config_dict = merge_config("awd", tiny_family[:3], {"steps": 5}, "float32")
    config_dict["models"][0]["model"] = f"{tiny_family[0]}+{lora_adapter}"
    config_dict["models"][1]["model"] = f"{tiny_family[0]}+{second}"
    config = tmp_path / "lora_qv.yml"
    config.write_text(yaml.safe_dump(config_dict))
    assert run([str(config), str(tmp_path / "out"), "--no-copy-tokenizer"]) == 0, capsys.readouterr().err
    expected = 2 * TINY.num_hidden_layers
    summary = json.loads((tmp_path / "out" / "awd_report.json").read_text())["summary"]
    assert summary["disentangled_tensors"] == expected
    assert f"over {expected} disentangled tensors" in capsys.readouterr().out
