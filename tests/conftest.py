"""Shared test set-up: offline Hugging Face, tiny LLaMA-shaped model families."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402
from typing import List  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

import mergekit_awd  # noqa: E402,F401  (registers the methods)
from mergekit_awd.testing.synthetic import build_family


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory) -> List[Path]:
    """[base, ft_0, ft_1, ft_2]: tiny float32 LLaMA models with correlated task vectors."""
    return build_family(tmp_path_factory.mktemp("family"), n_models=3, seed=0)


@pytest.fixture(scope="session")
def tiny_family_bf16(tmp_path_factory) -> List[Path]:
    """The same shapes saved in bfloat16."""
    return build_family(tmp_path_factory.mktemp("family_bf16"), n_models=3, seed=1, dtype=torch.bfloat16)


@pytest.fixture(scope="session")
def tiny_family_with_identical(tmp_path_factory) -> List[Path]:
    """[base, ft_0, ft_1, ft_2] where ft_1 is identical to the base (zero task vectors)."""
    return build_family(tmp_path_factory.mktemp("family_ident"), n_models=3, seed=2, identical=(1,))


@pytest.fixture(scope="session")
def lora_adapter(tiny_family, tmp_path_factory) -> Path:
    """A PEFT LoRA adapter (q_proj, v_proj) for the tiny LLaMA."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM.from_pretrained(str(tiny_family[1]))
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    path = tmp_path_factory.mktemp("lora") / "adapter"
    peft_model.save_pretrained(str(path))
    assert (path / "adapter_model.safetensors").is_file()
    return path


def load_state(path: Path) -> dict:
    from safetensors.torch import load_file

    state = {}
    for file in sorted(Path(path).glob("*.safetensors")):
        state.update(load_file(str(file)))
    return state


@pytest.fixture
def in_process_cli(monkeypatch):
    """The benchmark harness's merges run ``mergekit_awd.cli.run`` in this process instead of a fresh
    ``mergekit-awd`` subprocess (whose start-up, mostly importing transformers and peft, costs seconds
    per merge); the subprocess path itself stays covered by the tests that do not use this fixture."""
    import contextlib
    import io

    import benchmarks.harness.merging as merging
    from mergekit_awd.cli import run

    def invoke(arguments):
        captured = io.StringIO()
        with contextlib.redirect_stdout(captured), contextlib.redirect_stderr(captured):
            status = run(list(arguments))
        return status, captured.getvalue()

    monkeypatch.setattr(merging, "invoke_cli", invoke)
