"""Helpers shared by the end-to-end merge tests: write a YAML config, run the CLI, select tensors."""

from pathlib import Path

import torch
import yaml

from mergekit_awd.cli import run
from mergekit_awd.testing.synthetic import merge_config

LAYER_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def write_config(tmp_path: Path, paths, parameters, weights=None, dtype="float32", method="awd", name="merge.yml"):
    """tmp_path/name: a config merging paths[1:] onto paths[0] with ``method``."""
    path = tmp_path / name
    path.write_text(yaml.safe_dump(merge_config(method, paths, parameters, dtype, weights)))
    return path


def merge_cli(tmp_path: Path, config: Path, out_name: str, *extra: str) -> Path:
    out = tmp_path / out_name
    assert run([str(config), str(out), "--no-copy-tokenizer", "--quiet", *extra]) == 0
    return out


def is_block_linear(name: str, tensor: torch.Tensor) -> bool:
    return ".layers." in name and tensor.ndim == 2 and any(p in name for p in LAYER_LINEAR)
