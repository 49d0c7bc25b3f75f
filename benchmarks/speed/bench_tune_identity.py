"""What keying ``tune``'s score cache by file content costs on the LLM track's models.

    python -m benchmarks.speed.bench_tune_identity [--rounds 3]

``tune`` digests every file of every input model folder (XXH3-128, ``tools.tune_cache.identify``) on
every run, instead of trusting size + mtime_ns + inode.  This measures, in one process, on the LLM
track's five folders (SmolLM2-135M-Instruct base and four fine-tunes, float32 safetensors):

* ``digest``: ``identify_all`` over the five folders (what tune does before scoring);
* ``stat``: the size + mtime_ns + inode of the same files (the shortcut the issue offered);
* ``load``: loading the base with ``AutoModelForCausalLM.from_pretrained`` (what every tune does once).

The fine-tunes are the track's own when cached (``~/.cache/mergekit-awd/benchmarks/llm/finetunes``); otherwise
stand-ins of the same size and format (the base with a small perturbation, saved the same way) are
written to the cache and the results say so: the digest reads bytes, whatever they hold.  The files
were just read or written, so they are in the page cache: this is the cost of hashing, not of a cold
disk (a cold read is paid once by the merge that reads the same files anyway).
Writes benchmarks/results/tune_identity.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from typing import Dict, List, Tuple

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks.common import save_results  # noqa: E402
from benchmarks.llm.paths import FINETUNE_DIR, LLM_CACHE  # noqa: E402
from benchmarks.speed.measure import machine_info  # noqa: E402

STAND_IN_DIR = LLM_CACHE / "identity_stand_ins"
TASKS = 4


def _folders() -> Tuple[List[Path], str]:
    from benchmarks.llm.base_model import ensure_base_model

    base = ensure_base_model()
    tuned = sorted(p for p in FINETUNE_DIR.glob("*") if (p / "model.safetensors").is_file()) if FINETUNE_DIR.is_dir() else []
    if len(tuned) >= TASKS:
        return [base, *tuned[:TASKS]], "the track's fine-tunes"
    return [base, *_stand_ins(base)], "stand-ins of the fine-tunes' size and format (the track's are not cached)"


def _stand_ins(base: Path) -> List[Path]:
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folders = []
    for i in range(TASKS):
        folder = STAND_IN_DIR / f"task_{i}"
        if not (folder / "model.safetensors").is_file():
            generator = torch.Generator().manual_seed(i)
            state = load_file(str(base / "model.safetensors"))
            state = {k: v + 1e-3 * torch.randn(v.shape, generator=generator) * v.float().std() for k, v in state.items()}
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(base, folder, ignore=shutil.ignore_patterns("model.safetensors"))
            save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
        folders.append(folder)
    return folders


def _timed(function, rounds: int) -> List[float]:
    seconds = []
    for _ in range(rounds):
        started = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM

    from mergekit_awd.tools.tune_cache import identify_all

    folders, what = _folders()
    files = [f for folder in folders for f in folder.iterdir() if f.is_file()]
    total = sum(f.stat().st_size for f in files)
    roles = [(f"model {i}", str(folder)) for i, folder in enumerate(folders)]
    identify_all(roles)  # read once: the page cache holds them as after a merge
    timings: Dict[str, List[float]] = {
        "digest": _timed(lambda: identify_all(roles), args.rounds),
        "stat": _timed(lambda: [(s.st_size, s.st_mtime_ns, s.st_ino) for s in map(os.stat, files)], args.rounds),
        "load": _timed(lambda: AutoModelForCausalLM.from_pretrained(str(folders[0]), dtype=torch.float32), args.rounds),
    }
    median = {name: statistics.median(values) for name, values in timings.items()}
    results = {"folders": [str(f) for f in folders], "fine_tunes": what, "files": len(files), "bytes": total,
               "seconds": timings, "median_seconds": median,
               "digest_gb_per_s": total / median["digest"] / 1e9,
               "digest_over_load": median["digest"] / median["load"],
               "machine": machine_info(threads=torch.get_num_threads())}
    lines = ["# tune's content-addressed cache: what the digests cost", "",
             "Command: `python -m benchmarks.speed.bench_tune_identity` (median of "
             f"{args.rounds} rounds, one process; files in the page cache).", "",
             f"Inputs: the LLM track's base and {TASKS} fine-tunes ({what}): {len(files)} files, "
             f"{total / 1e9:.2f} GB.", "",
             "| what | median s |", "| --- | --- |",
             f"| XXH3-128 digest of every file (what tune does on every run) | {median['digest']:.3f} |",
             f"| size + mtime_ns + inode of every file (the shortcut not taken) | {median['stat']:.5f} |",
             f"| loading the base model once (every tune does) | {median['load']:.3f} |", "",
             f"The digests run at {results['digest_gb_per_s']:.1f} GB/s and cost "
             f"{results['digest_over_load']:.2f}× one load of the base model; a scored point on this track "
             "costs 10–45 s (benchmarks/results/llm_tune_check.md), so tune digests every file on every run.", ""]
    save_results("tune_identity", results, lines)


if __name__ == "__main__":
    main()
