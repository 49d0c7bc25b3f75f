"""``python -m benchmarks.speed.gpu_merge_check``: a ``--cuda`` merge of a SmolLM2-shaped family against the
CPU merge of the same config (``benchmarks/gpu_check.sh`` step 3).

The family: the LLM track's base and fine-tunes when cached (``./run.sh llm-quality``), else synthetic
models of SmolLM2-135M's shapes (30 layers, hidden 576, MLP 1536, 9/3 heads; vocabulary cut to 4096 to
keep the check short).  For awd (each scope, and row scope in front of ties), tsv, iso_cts and wudi exact:
wall time of each merge and the largest difference of any tensor relative to that tensor's largest entry,
printed as a table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import List

import yaml

from benchmarks.harness.lambda_path import load_state
from mergekit_awd.cli import run
from mergekit_awd.testing.synthetic import LlamaShape, build_family, merge_config

SMOLLM2_SHAPE = LlamaShape(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                           num_key_value_heads=3, vocab_size=4096, tie_word_embeddings=True)
CASES = [("awd", {"scope": "tensor"}), ("awd", {"scope": "model"}), ("awd", {"scope": "row"}),
         ("awd", {"combine": "ties", "scope": "row"}), ("tsv", {}), ("iso_cts", {}), ("wudi", {"solver": "exact"})]


def family(root: Path) -> List[Path]:
    from benchmarks.llm.paths import BASE_DIR, FINETUNE_DIR
    from benchmarks.llm.tasks import TASK_NAMES

    cached = [BASE_DIR, *(FINETUNE_DIR / t for t in TASK_NAMES)]
    if all((p / "model.safetensors").exists() for p in cached):
        print("family: the LLM track's SmolLM2-135M-Instruct fine-tunes")
        return cached
    print("family: synthetic SmolLM2-shaped models (4 fine-tunes)")
    return build_family(root, n_models=4, shape=SMOLLM2_SHAPE)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = family(root / "family")
        print("| method | cpu s | cuda s | max relative difference |")
        print("| --- | --- | --- | --- |")
        worst, failed = 0.0, []
        for case, (method, parameters) in enumerate(CASES):
            label = f"{method} {parameters or ''}".strip()
            config = root / f"{case}.yml"
            config.write_text(yaml.safe_dump(merge_config(method, paths, parameters, "float32")))
            seconds = {}
            for device, flags in (("cpu", []), ("cuda", ["--cuda"])):
                start = time.perf_counter()
                if run([str(config), str(root / f"{case}-{device}"), "--no-copy-tokenizer", "--quiet", *flags]) != 0:
                    break
                seconds[device] = time.perf_counter() - start
            if len(seconds) < 2:  # the error is printed above; the other cases still run
                failed.append(f"{label} on {'cuda' if seconds else 'cpu'}")
                print(f"| {label} | failed on {'cuda' if seconds else 'cpu'} | | |")
                continue
            cpu, gpu = load_state(root / f"{case}-cpu"), load_state(root / f"{case}-cuda")
            diff = max(float((cpu[k].float() - gpu[k].float()).abs().max()) / (float(cpu[k].float().abs().max()) or 1.0)
                       for k in cpu)
            worst = max(worst, diff)
            print(f"| {label} | {seconds['cpu']:.1f} | {seconds['cuda']:.1f} | {diff:.2e} |")
        if failed:
            raise SystemExit(f"failed: {', '.join(failed)}")
        if worst > 1e-3:
            raise SystemExit(f"CUDA and CPU merges differ by {worst:.2e} (relative) > 1e-3")

if __name__ == "__main__":
    main()
