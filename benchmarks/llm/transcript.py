"""``python -m benchmarks.llm.transcript``: ``mergekit-awd`` on the SmolLM2 family as a user runs it,
written to ``docs/smollm2_transcript.md`` (commands, configs and everything they print, unedited).

Uses the LLM track's cached base and fine-tunes (``./run.sh llm-quality`` builds them): three
fine-tunes merged in bfloat16 by ``tsv`` (exact SVDs: the estimate line and the bar) and by ``awd``
``scope: model`` (Gram pass, solve, write), then ``inspect``; the output is captured from a pipe,
so bars print their plain, non-terminal form.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List

import yaml

from benchmarks.llm.paths import BASE_DIR, FINETUNE_DIR
from benchmarks.harness.merging import cli_command

DOC = Path(__file__).resolve().parents[2] / "docs" / "smollm2_transcript.md"
TASKS = ("rt_sentiment", "fortune_language", "arithmetic")
CONFIGS = {
    "tsv.yml": {"merge_method": "tsv", "parameters": {"lambda": 1.0}},
    "awd.yml": {"merge_method": "awd", "parameters": {"scope": "model", "alpha": 0.03, "lambda": 0.5}},
}


def config_text(spec: dict) -> str:
    config = {
        "merge_method": spec["merge_method"],
        "base_model": "smollm2/base",
        "models": [{"model": f"smollm2/{t}"} for t in TASKS],
        "parameters": spec["parameters"],
        "dtype": "bfloat16",
    }
    return yaml.safe_dump(config, sort_keys=False)


def run_shown(argv: List[str], cwd: Path) -> str:
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    text = (done.stderr + done.stdout).replace("\r", "\n")
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines) + f"\n[exit {done.returncode}, {seconds:.0f} s wall]"


def main() -> None:
    missing = [p for p in [BASE_DIR, *(FINETUNE_DIR / t for t in TASKS)] if not (p / "model.safetensors").exists()]
    if missing:
        raise SystemExit(f"missing {missing}: run ./run.sh llm-quality first (it builds the SmolLM2 family)")
    cli = Path(cli_command()[0]).name if len(cli_command()) == 1 else "mergekit-awd"
    parts = [
        "# `mergekit-awd` on SmolLM2-135M-Instruct: a transcript",
        "",
        "Written by `python -m benchmarks.llm.transcript` (unedited output; the bars are in their "
        "non-terminal form because the output went to a pipe; a terminal shows one live bar instead). "
        f"Three full fine-tunes of the LLM track ({', '.join(TASKS)}), merged in bfloat16 on the 2-core "
        f"machine with {os.cpu_count()} CPUs visible.",
        "",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "smollm2").mkdir()
        os.symlink(BASE_DIR, work / "smollm2" / "base")
        for task in TASKS:
            os.symlink(FINETUNE_DIR / task, work / "smollm2" / task)
        for name, spec in CONFIGS.items():
            text = config_text(spec)
            (work / name).write_text(text)
            out = f"merged-{spec['merge_method']}"
            parts += [f"## `{name}`", "", "```yaml", text.rstrip(), "```", "", "```text",
                      f"$ {cli} {name} {out}", run_shown([*cli_command(), name, out], work), "```", ""]
            shutil.rmtree(work / out, ignore_errors=True)
        parts += ["## `inspect`", "", "```text", f"$ {cli} inspect awd.yml --no-tsv",
                  run_shown([*cli_command(), "inspect", "awd.yml", "--no-tsv"], work), "```", ""]
    DOC.parent.mkdir(exist_ok=True)
    DOC.write_text("\n".join(parts).replace(str(Path(sys.prefix)), "<venv>"))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
