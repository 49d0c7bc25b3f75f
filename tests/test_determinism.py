"""The same inputs and configuration give bit-identical output files.

Two `mergekit-awd` processes, one with ``-j 1`` and one with ``-j 2`` (mergekit's --num-threads),
each merge the same inputs with scope tensor, scope model and the direct solver; the ``-j 2``
process (which also has another PYTHONHASHSEED) merges everything a second time.  Every output
file is compared by sha256.

No file is left out: none holds a timestamp.  README.md names the input paths and OUT's folder
name (its title), so all runs read the same input folders and write into folders of the same
name (under different parents).  Between processes README.md is compared with its lines sorted,
because mergekit lists the merged models in a per-process order; that order has its own test.  The tensors are large enough (up to 81,920 elements) to span
several of the solver's fixed-size chunks and to be split across threads by torch/MKL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict

import pytest
import yaml

from mergekit_awd.testing.synthetic import LlamaShape, build_family

ROOT = Path(__file__).resolve().parents[1]
SHAPE = LlamaShape(hidden_size=128, intermediate_size=640, num_hidden_layers=1,
                   num_attention_heads=4, num_key_value_heads=2, vocab_size=512)
CONFIGS = {
    "scope-tensor": {"scope": "tensor"},
    "scope-model": {"scope": "model"},
    "direct-solver": {"scope": "tensor", "solver": "direct", "optimizer": "gd", "lr": 0.05, "steps": 30},
}

# Runs each (config, out) pair through the CLI in one process and prints the sha256 of every file.
# Every merge passes -j (torch accepts set_num_interop_threads once per process; the CLI keeps the
# first inter-op pool and sets the thread count again).
DRIVER = textwrap.dedent("""
    import hashlib, json, sys
    from pathlib import Path
    import torch
    from mergekit_awd.cli import run
    jobs, threads = json.loads(sys.argv[1]), sys.argv[2]
    hashes = {}
    for config, out in jobs:
        code = run([config, out, "--no-copy-tokenizer", "--quiet", "-j", threads])
        assert code == 0, (config, code)
        hashes[out] = {str(f.relative_to(out)): hashlib.sha256(f.read_bytes()).hexdigest()
                       for f in sorted(Path(out).rglob("*")) if f.is_file()}
        hashes[out]["README.md (models list sorted)"] = hashlib.sha256(
            "\\n".join(sorted((Path(out) / "README.md").read_text().splitlines())).encode()).hexdigest()
        hashes[out]["README.md models"] = [line[2:] for line in (Path(out) / "README.md").read_text().splitlines()
                                           if line.startswith("* ")]
    print(json.dumps({"threads": torch.get_num_threads(), "hashes": hashes}))
""")


# (run names, -j, PYTHONHASHSEED) per process.  The processes differ in the hash seed too
# (mergekit iterates sets of models): the outputs must not depend on either.
PROCESSES = (
    (["j1"], "1", "0"),
    (["j2", "j2-again"], "2", "1"),
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Dict[str, Dict[str, Dict[str, str]]]:
    """{run name: {config name: {file: sha256}}} for every run of ``PROCESSES``."""
    root = tmp_path_factory.mktemp("determinism")
    paths = build_family(root / "family", n_models=3, shape=SHAPE, seed=11, tokenizer=False)
    configs = {}
    for name, parameters in CONFIGS.items():
        config = {"merge_method": "awd", "base_model": str(paths[0]),
                  "models": [{"model": str(p)} for p in paths[1:]],
                  "parameters": parameters, "dtype": "float32"}
        configs[name] = root / f"{name}.yml"
        configs[name].write_text(yaml.safe_dump(config))
    driver = root / "driver.py"
    driver.write_text(DRIVER)
    results = {}
    names = list(CONFIGS)
    for run_names, threads, hash_seed in PROCESSES:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "PYTHONHASHSEED": hash_seed}
        jobs = [[str(configs[c]), str(root / run / c)] for run in run_names for c in names]
        done = subprocess.run([sys.executable, str(driver), json.dumps(jobs), threads],
                              capture_output=True, text=True, env=env, cwd=str(root), timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["threads"] == int(threads)
        for run in run_names:
            results[run] = {c: report["hashes"][str(root / run / c)] for c in names}
    return results


def differing(a: Dict[str, str], b: Dict[str, str]):
    return sorted(f for f in set(a) | set(b) if a.get(f) != b.get(f))


def without_card_order(hashes: Dict[str, str]) -> Dict[str, str]:
    """All files, README.md compared with its lines sorted (see the card-order test below)."""
    return {f: h for f, h in hashes.items() if f not in ("README.md", "README.md models")}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_two_runs_give_identical_files(runs, config):
    first, second = runs["j2"][config], runs["j2-again"][config]
    assert {"model.safetensors", "config.json", "awd_report.json", "README.md",
            "mergekit_awd_complete.json", "mergekit_config.yml"} <= set(first)
    assert differing(first, second) == []


@pytest.mark.parametrize("config", list(CONFIGS))
def test_one_and_two_threads_give_identical_files(runs, config):
    assert differing(without_card_order(runs["j1"][config]), without_card_order(runs["j2"][config])) == []


def test_model_card_lists_the_merged_models_in_config_order(runs):
    """mergekit's generate_card lists ``config.referenced_models()``, a set of ModelReference whose
    hash differs from process to process (even with PYTHONHASHSEED fixed), so README.md's
    "Models Merged" list comes out in a different order in different processes."""
    orders = {(run, config): hashes["README.md models"]
              for run, per_config in runs.items() for config, hashes in per_config.items()}
    expected = sorted(next(iter(orders.values())))  # the config lists ft_0, ft_1, ft_2 in order
    assert len(expected) == 3
    assert {key: order for key, order in orders.items() if order != expected} == {}
