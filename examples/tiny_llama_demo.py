"""Offline demo on synthetic models: build a tiny LLaMA base + 3 fine-tunes, merge them with awd.

    python examples/tiny_llama_demo.py [--out examples/output/tiny_awd]

Everything is built locally (no Hub).  The merged model is a normal transformers folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "output" / "tiny_awd"))
    parser.add_argument("--models", default=str(HERE / "output" / "tiny_family"))
    args = parser.parse_args()

    from mergekit_awd.testing.synthetic import awd_config, build_family

    models = Path(args.models)
    if not (models / "ft_2" / "model.safetensors").exists():
        print(f"Building a tiny LLaMA base and 3 fine-tunes in {models} ...")
        build_family(models, n_models=3)
    paths = [models / "base"] + [models / f"ft_{i}" for i in range(3)]
    config = awd_config(paths, {"lambda": 0.5, "alpha": 0.01, "scope": "model"})
    config_path = models / "awd.yml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"Config: {config_path}\n{config_path.read_text()}")
    out = Path(args.out)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    subprocess.run(["mergekit-awd", str(config_path), str(out)], check=True)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    logits = model(**tokenizer(["w1 w2 w3"], return_tensors="pt")).logits
    report = json.loads((out / "awd_report.json").read_text())
    print(f"\nMerged model: {out}  (load it with AutoModelForCausalLM.from_pretrained({str(out)!r}))")
    print(f"Logits finite: {bool(logits.isfinite().all())}, shape {tuple(logits.shape)}")
    summary = report["summary"]
    print(f"Mean |cos| between task vectors: {summary['mean_abs_cos_before']:.3f} before, "
          f"{summary['mean_abs_cos_after']:.4f} after disentanglement "
          f"({summary['disentangled_tensors']} tensors, one δ over all of them)")
    sys.exit(0)


if __name__ == "__main__":
    main()
