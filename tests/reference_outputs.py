"""Fixed merges of the synthetic family, reduced to tensor digests: proof that a refactor changes no bit.

    python tests/reference_outputs.py      (re)write tests/data/reference_outputs.json

``tests/test_outputs_unchanged.py`` produces the same outputs and compares them with the JSON,
which was written by the commit before the package redesign (issue #11; the entries marked below by
the commit before the second, issue #26) and must not be regenerated to make a refactor pass: a
changed digest is a changed merge.  ``python tests/reference_outputs.py --add`` writes only the
entries the JSON lacks.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Dict

import torch
import yaml

REFERENCE = Path(__file__).with_name("data") / "reference_outputs.json"

# name -> (merge_method, parameters, family dtype)
MERGES = {
    "awd_tensor": ("awd", {"steps": 20}, "float32"),
    "awd_tensor_bf16": ("awd", {"steps": 20}, "bfloat16"),
    "awd_model": ("awd", {"scope": "model", "steps": 20}, "float32"),
    "awd_direct_gd": ("awd", {"solver": "direct", "optimizer": "gd", "steps": 10}, "float32"),
    "tsv_exact": ("tsv", {}, "float32"),
    "tsv_lowrank": ("tsv", {"svd": "lowrank"}, "float32"),
    "tsv_disentangle": ("tsv", {"disentangle": True, "steps": 20}, "float32"),
    # added before the second redesign (issue #26), written by the commit before it
    "awd_row": ("awd", {"scope": "row", "steps": 20}, "float32"),
    "awd_row_bf16": ("awd", {"scope": "row", "steps": 20, "optimizer": "sgd", "lr": 0.05}, "bfloat16"),
    "awd_row_direct_gd": ("awd", {"scope": "row", "solver": "direct", "optimizer": "gd", "steps": 10}, "float32"),
    "awd_tensor_absolute_gd": ("awd", {"units": "absolute", "optimizer": "gd", "steps": 15, "lr": 0.001,
                                       "lambda": 0.7, "normalize": True}, "float32"),
    "awd_combine_ties": ("awd", {"combine": "ties", "density": 0.5, "steps": 20}, "float32"),
    "awd_combine_tsv": ("awd", {"combine": "tsv", "steps": 20}, "float32"),
    "awd_model_combine_ties": ("awd", {"combine": "ties", "scope": "model", "density": 0.5, "steps": 20}, "float32"),
    "awd_row_combine_ties": ("awd", {"combine": "ties", "scope": "row", "density": 0.5, "steps": 20}, "float32"),
    "awd_direct_combine_tsv": ("awd", {"combine": "tsv", "solver": "direct", "optimizer": "gd", "steps": 10},
                               "float32"),
    "awd_combine_wudi_exact": ("awd", {"combine": "wudi", "combine_solver": "exact", "steps": 20}, "float32"),
    "wudi_adam": ("wudi", {"steps": 30}, "float32"),
    "wudi_exact": ("wudi", {"solver": "exact"}, "float32"),
    "iso_c": ("iso_c", {}, "float32"),
    "iso_cts": ("iso_cts", {}, "float32"),
    "ace": ("ace", {}, "float32"),
}
# name -> compress keyword arguments
COMPRESSIONS = {
    "compress_default": {},
    "compress_rank2_lowrank": {"rank": 2, "svd": "lowrank"},
}


def tensor_digests(folder: Path) -> Dict[str, str]:
    """sha256 of each tensor's dtype, shape and bytes, for every safetensors file under ``folder``."""
    from safetensors.torch import load_file

    digests = {}
    for file in sorted(folder.rglob("*.safetensors")):
        for name, tensor in sorted(load_file(str(file)).items()):
            data = tensor.contiguous().view(torch.uint8).numpy().tobytes() if tensor.numel() else b""
            key = f"{file.relative_to(folder).as_posix()}:{name}"
            digests[key] = hashlib.sha256(f"{tensor.dtype}{list(tensor.shape)}".encode() + data).hexdigest()
    return digests


def produce(work: Path) -> Dict[str, Dict[str, str]]:
    """Run every fixed merge and compression in ``work``; their tensor digests by name."""
    from mergekit_awd.testing.synthetic import build_family

    families = {
        "float32": build_family(work / "family_f32", n_models=3, seed=0),
        "bfloat16": build_family(work / "family_bf16", n_models=3, seed=1, dtype=torch.bfloat16),
    }
    results: Dict[str, Dict[str, str]] = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_all(work, families, results)
    finally:
        torch.set_num_threads(threads)
    return results


def _run_all(work: Path, families: Dict[str, list], results: Dict[str, Dict[str, str]]) -> None:
    from mergekit_awd import run_merge
    from mergekit_awd.testing.synthetic import merge_config
    from mergekit_awd.tools.compress import compress_family

    for name, (method, parameters, dtype) in MERGES.items():
        config = work / f"{name}.yml"
        config.write_text(yaml.safe_dump(merge_config(method, families[dtype], parameters, dtype)))
        out = work / name
        run_merge(config, out, copy_tokenizer=False, quiet=True, write_model_card=False)
        results[name] = tensor_digests(out)
    config = work / "compress.yml"
    config.write_text(yaml.safe_dump(merge_config("tsv", families["float32"])))
    for name, options in COMPRESSIONS.items():
        out = work / name
        compress_family(config, str(out), **options)
        results[name] = tensor_digests(out)


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        results = produce(Path(scratch))
    if "--add" in sys.argv[1:] and REFERENCE.exists():
        existing = json.loads(REFERENCE.read_text())
        changed = [name for name in existing if results.get(name) != existing[name]]
        if changed:
            sys.exit(f"existing entries differ from this code: {changed}; nothing written")
        results = {**results, **existing}
    REFERENCE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE.write_text(json.dumps(results, indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE} ({sum(len(v) for v in results.values())} tensors)", file=sys.stderr)


if __name__ == "__main__":
    main()
