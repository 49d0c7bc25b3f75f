"""Synthetic LLaMA-shaped models: a random base and "fine-tunes" with correlated task vectors.

Used by the embedded demo, the tests and the benchmarks; everything is built offline.
Each fine-tune is θ_i = θ_base + s_t · (c · shared_t + task_i,t) per tensor t, where shared_t is
common to all fine-tunes (the redundancy AWD removes) and task_i,t is specific to model i; s_t is
``scale`` times the tensor's RMS, so every tensor moves by a comparable relative amount.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

VOCAB_WORDS = [f"w{i}" for i in range(200)]


@dataclass(frozen=True)
class LlamaShape:
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    vocab_size: int = 256
    tie_word_embeddings: bool = False


TINY = LlamaShape()
# ~134M parameters: 12 layers of hidden 768 / MLP 2048, vocabulary 32,000, untied head.
BENCH_150M = LlamaShape(
    hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
    num_attention_heads=12, num_key_value_heads=4, vocab_size=32000,
)


def llama_config(shape: LlamaShape):
    from transformers import LlamaConfig

    return LlamaConfig(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        vocab_size=shape.vocab_size,
        max_position_embeddings=128,
        tie_word_embeddings=shape.tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def save_word_tokenizer(path: Path, vocab_size: int) -> None:
    """A small whitespace word-level tokenizer, so outputs load with AutoTokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + VOCAB_WORDS[: max(vocab_size - 4, 0)]
    vocab = {w: i for i, w in enumerate(words[:vocab_size])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    fast.save_pretrained(str(path))


def _save_state(model, state: Dict[str, torch.Tensor], path: Path, dtype: torch.dtype) -> None:
    model.load_state_dict(state)
    model.to(dtype)
    model.save_pretrained(str(path), safe_serialization=True)


def build_family(
    root: os.PathLike,
    n_models: int = 3,
    shape: LlamaShape = TINY,
    seed: int = 0,
    shared: float = 0.6,
    scale: float = 0.02,
    dtype: torch.dtype = torch.float32,
    identical: Sequence[int] = (),
    tokenizer: bool = True,
) -> List[Path]:
    """Write ``root/base`` and ``root/ft_0 … ft_{n-1}``; return [base, ft_0, …].

    shared:    weight c of the component common to all fine-tunes (0 = independent tasks).
    scale:     size of a task vector relative to its tensor's RMS.
    identical: indices of fine-tunes saved identical to the base (zero task vectors).
    """
    from transformers import LlamaForCausalLM

    root = Path(root)
    torch.manual_seed(seed)
    config = llama_config(shape)
    model = LlamaForCausalLM(config)
    base_state = {k: v.detach().clone().float() for k, v in model.state_dict().items()}
    paths = [root / "base"] + [root / f"ft_{i}" for i in range(n_models)]
    _save_state(model, base_state, paths[0], dtype)
    if tokenizer:
        save_word_tokenizer(paths[0], shape.vocab_size)
    generator = torch.Generator().manual_seed(seed + 1)
    shared_dirs = {k: torch.randn(v.shape, generator=generator) for k, v in base_state.items()}
    for i in range(n_models):
        state = {}
        for key, value in base_state.items():
            if i in identical:
                state[key] = value.clone()
                continue
            rms = float(value.pow(2).mean().sqrt()) or 1.0
            own = torch.randn(value.shape, generator=generator)
            state[key] = value + scale * rms * (shared * shared_dirs[key] + own)
        _save_state(model.float(), state, paths[i + 1], dtype)
        if tokenizer:
            save_word_tokenizer(paths[i + 1], shape.vocab_size)
    return paths


def merge_config(method: str, paths: Sequence[Path], parameters: Optional[dict] = None, dtype: str = "float32",
                 weights: Optional[Sequence[float]] = None) -> dict:
    """A mergekit config dict merging paths[1:] onto the base paths[0] with ``method``."""
    models = []
    for i, p in enumerate(paths[1:]):
        entry = {"model": str(p)}
        if weights is not None:
            entry["parameters"] = {"weight": weights[i]}
        models.append(entry)
    return {
        "merge_method": method,
        "base_model": str(paths[0]),
        "models": models,
        "parameters": dict(parameters or {}),
        "dtype": dtype,
    }


def awd_config(paths: Sequence[Path], parameters: Optional[dict] = None, dtype: str = "float32",
               weights: Optional[Sequence[float]] = None) -> dict:
    """A mergekit config dict merging paths[1:] onto paths[0] with ``awd``."""
    return merge_config("awd", paths, parameters, dtype, weights)
