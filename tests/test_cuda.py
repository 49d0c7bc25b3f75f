"""Merges on CUDA equal the CPU merges (run where torch sees a GPU; ``benchmarks/gpu_check.sh``)."""

from __future__ import annotations

import pytest
import torch
import yaml

from conftest import load_state
from mergekit_awd.cli import run
from mergekit_awd.testing.synthetic import merge_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CASES = [
    ("awd", {"scope": "tensor"}), ("awd", {"scope": "model"}), ("awd", {"scope": "row"}),
    ("awd", {"scope": "row", "optimizer": "sgd"}), ("awd", {"combine": "ties"}), ("awd", {"combine": "tsv", "scope": "row"}),
    ("tsv", {}), ("tsv", {"svd": "lowrank"}), ("tsv", {"disentangle": True}),
    ("wudi", {"solver": "exact"}), ("wudi", {"solver": "adam", "steps": 20}), ("iso_c", {}), ("iso_cts", {}),
    ("ace", {}), ("ace", {"select": "matrices", "gamma_threshold": 0.0}), ("awd", {"combine": "ace"}),
]


@pytest.mark.parametrize("method,parameters", CASES, ids=[f"{m}-{p}" for m, p in CASES])
def test_cuda_merge_equals_cpu_merge(tiny_family, tmp_path, method, parameters):
    config = tmp_path / "merge.yml"
    config.write_text(yaml.safe_dump(merge_config(method, tiny_family, parameters, "float32")))
    assert run([str(config), str(tmp_path / "cpu"), "--no-copy-tokenizer", "--quiet"]) == 0
    assert run([str(config), str(tmp_path / "gpu"), "--no-copy-tokenizer", "--quiet", "--cuda"]) == 0
    cpu, gpu = load_state(tmp_path / "cpu"), load_state(tmp_path / "gpu")
    assert set(cpu) == set(gpu)
    for name in cpu:
        scale = float(cpu[name].abs().max()) or 1.0
        assert float((cpu[name] - gpu[name]).abs().max()) <= 1e-4 * scale, name
