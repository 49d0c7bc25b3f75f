"""What layer-wise tuning costs on SmolLM2-135M with K = 8 (issue #29's budget: ≤ 20 min and its peak memory).

    python -m benchmarks.speed.bench_layerwise_cost [--k 8] [--steps 100] [--method task_arithmetic]

The cost does not depend on what the fine-tunes learned, only on their shapes and the lines, so the K
models are stand-ins: the base with seeded Gaussian noise (std 1e-3) on every 2-D block weight, written
once to ``~/.cache/mergekit-awd/benchmarks/layerwise_cost/``.  The lines are the hard track's validation examples (128
per task, the eight tasks; ``--objective entropy``: labels unused).  One run of ``tools.layerwise``
(``per_task_parts`` then ``learn_coefficients`` with ``mergekit-awd tune --layerwise``'s defaults: Adam
lr 1e-3, batches of 16 lines, every 4th line held out, evaluated every 10 steps) in a fresh process:
wall seconds of each part and the process's peak resident memory.  Writes
benchmarks/results/layerwise_cost.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from benchmarks.common import CACHE, RESULTS

STAND_INS = CACHE / "layerwise_cost"
RESULT = RESULTS / "layerwise_cost"


def stand_ins(base_dir: Path, k: int) -> list:
    """K stand-in fine-tunes of the base (built once)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folders = []
    state = None
    for index in range(k):
        folder = STAND_INS / f"stand_in_{index}"
        if not (folder / "model.safetensors").exists():
            state = state or load_file(str(base_dir / "model.safetensors"))
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(base_dir, folder)
            generator = torch.Generator().manual_seed(index)
            noisy = {name: (tensor + 1e-3 * torch.randn(tensor.shape, generator=generator)
                            if tensor.ndim == 2 and ".layers." in name else tensor) for name, tensor in state.items()}
            save_file(noisy, str(folder / "model.safetensors"), metadata={"format": "pt"})
        folders.append(folder)
    return folders


def measure(k: int, steps: int, method: str, objective: str) -> Dict[str, Any]:
    """One layer-wise tuning, timed (run in the child process)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm_hard.tasks import HARD_TASK_NAMES, hard_task_splits
    from benchmarks.llm_hard.adamerging import ROWS, merge_configuration
    from mergekit_awd.tools.layerwise import held_out_split, learn_coefficients, per_task_parts
    from mergekit_awd.tools.tune_layerwise import peak_memory_gib

    base = ensure_base_model()
    folders = stand_ins(base, k)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    lines = [e for t in HARD_TASK_NAMES for e in hard_task_splits(t, tokenizer).validation]
    started = time.perf_counter()
    parameters = ROWS["awd_adamerging"][1] if method == "awd" else {}
    problem = per_task_parts(merge_configuration(method, parameters, base, folders), "stand-ins")
    parts_seconds = time.perf_counter() - started
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32).eval()
    train, held = held_out_split([lines], 4)  # every 4th line of the 1,024
    result = learn_coefficients(problem, model, tokenizer, train, held, objective, steps=steps)
    return {"k": k, "steps": steps, "method": method, "objective": objective, "lines": len(lines),
            "train_lines": len(train), "held_out_lines": len(held), "groups": len(problem.groups),
            "seconds_parts": round(parts_seconds, 1), "seconds_learning": round(result.seconds, 1),
            "seconds_total": round(time.perf_counter() - started, 1), "peak_memory_gib": round(peak_memory_gib(), 2),
            "threads": torch.get_num_threads()}


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--method", default="task_arithmetic", choices=("task_arithmetic", "awd"))
    parser.add_argument("--objective", default="entropy", choices=("entropy", "likelihood"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.k, args.steps, args.method, args.objective)))
        return {}
    command = [sys.executable, "-m", "benchmarks.speed.bench_layerwise_cost", "--child", "--k", str(args.k),
               "--steps", str(args.steps), "--method", args.method, "--objective", args.objective]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    record = {**json.loads(output.strip().splitlines()[-1]),
              "command": "python -m benchmarks.speed.bench_layerwise_cost " + " ".join(argv or sys.argv[1:])}
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    RESULT.with_suffix(".md").write_text(
        f"# Layer-wise tuning cost (`{record['command']}`)\n\n"
        f"SmolLM2-135M-Instruct, K = {record['k']} stand-in fine-tunes, {record['method']}, {record['objective']} "
        f"objective, {record['lines']} lines (the hard track's validation, {record['held_out_lines']} held out), "
        f"{record['groups']} groups, {record['steps']} Adam steps of 16 lines, {record['threads']} threads.\n\n"
        f"| part | seconds |\n| --- | --- |\n| per-task parts (read the models, form D_i) | {record['seconds_parts']} |\n"
        f"| learning (steps, held-out evaluations, final training value) | {record['seconds_learning']} |\n"
        f"| total | {record['seconds_total']} |\n\nPeak resident memory of the process: "
        f"{record['peak_memory_gib']} GiB.\n")
    print(json.dumps(record, indent=2))
    return record


if __name__ == "__main__":
    main()
