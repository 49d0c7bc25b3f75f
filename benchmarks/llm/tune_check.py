"""``python -m benchmarks.llm.tune_check [--methods awd_tensor tsv]``: ``mergekit-awd tune`` on the LLM track.

For each method row of ``benchmarks/results/llm_quality.json`` (the benchmark's own validation
choice), this writes the track's validation split as a tune JSONL file (the same prompts, choices and
answers the benchmark scores), runs ``mergekit-awd tune`` on the chosen configuration with the
benchmark's λ grid and each task's fine-tune as ``--reference`` (so the score is the benchmark's
validation normalized accuracy) and ``--merge``, then checks:

* tune chooses the benchmark's λ;
* its ``--merge`` output is bit-identical to the benchmark's final bfloat16 CLI merge at that λ
  (merged again here with the benchmark's configuration);
* its cost: merges and evaluations (one merge per λ path, one evaluation per point and reference),
  with the seconds of each.

``--lambda-grid 0.1:1.0:0.1`` replaces the benchmark's λ grid (the issue's ten-point cost check; the row
is named ``METHOD λ START:STOP:STEP`` and its --merge is compared with the CLI merge at tune's λ).
Results are written after every method, so an interrupted run keeps the rows it finished.

Needs the fine-tunes of ``./run.sh llm-quality`` (~/.cache/mergekit-awd/benchmarks/llm).  Writes
benchmarks/results/llm_tune_check.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from benchmarks.harness.runner import offline_environment

offline_environment()

DEFAULT_METHODS = ("awd_tensor", "tsv")


def export_validation(path: Path, tasks: Sequence[str], base_dir: Path) -> int:
    """The track's validation examples as tune JSONL lines, grouped by task; returns the line count."""
    from transformers import AutoTokenizer

    from benchmarks.llm.tasks import task_splits
    from mergekit_awd.tools.lm_scoring import AnswerExample

    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    lines: List[str] = []
    for task in tasks:
        for example in task_splits(task, tokenizer).validation:
            if isinstance(example, AnswerExample):
                record: Dict[str, Any] = {"prompt": example.prompt, "answer": example.answer}
            else:
                record = {"prompt": example.prompt, "choices": list(example.choices), "label": example.label}
            lines.append(json.dumps({**record, "task": task}))
    path.write_text("\n".join(lines) + "\n")
    return len(lines)


def _identical(left: Path, right: Path) -> bool:
    from safetensors.torch import load_file

    a, b = load_file(str(left / "model.safetensors")), load_file(str(right / "model.safetensors"))
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--lambda-grid", default=None, metavar="START:STOP:STEP",
                        help="tune over this λ grid instead of the benchmark's")
    args = parser.parse_args(argv)
    import yaml

    from benchmarks.llm.base_model import ensure_base_model
    from benchmarks.llm.experiment import FINAL_DTYPE
    from benchmarks.llm.models import ensure_finetunes
    from benchmarks.common import CACHE
    from benchmarks.llm.paths import RESULTS_JSON
    from benchmarks.llm.tasks import TASK_NAMES
    from benchmarks.harness.merging import cli_command, merge_config, spec_from_params

    results = json.loads(Path(RESULTS_JSON).read_text())
    tasks = list(TASK_NAMES)
    base_dir = ensure_base_model()
    folders = ensure_finetunes(tasks)
    work = CACHE / "llm" / "tune_check"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = work / "validation.jsonl"
    lines = export_validation(data, tasks, base_dir)
    rows: Dict[str, Any] = {}
    out: Dict[str, Any] = {}
    for name in args.methods:
        row_name = name if args.lambda_grid is None else f"{name} λ {args.lambda_grid}"
        entry = results["methods"][name]
        spec, chosen_lambda = spec_from_params(entry["params"])  # the chosen spec, λ aside
        grid = results["validation_grid"][name]["lambdas"]
        grid_text = "lambda=" + (",".join(str(v) for v in grid) if args.lambda_grid is None else args.lambda_grid)
        config = work / f"{name}.yml"
        config.write_text(yaml.safe_dump(merge_config(spec, base_dir, [folders[t] for t in tasks], dtype=FINAL_DTYPE)))
        merged = work / f"{name}-merged"
        shutil.rmtree(work / f"{name}.tune", ignore_errors=True)
        command = [*cli_command(), "tune", str(config), "--data", str(data), "--grid", grid_text,
                   "--out", str(work / f"{name}.tune"),
                   "--merge", str(merged), "--max-new-tokens", "8", "--quiet",
                   *[a for t in tasks for a in ("--reference", f"{t}={folders[t]}")]]
        started = time.perf_counter()
        subprocess.run(command, check=True)
        seconds = time.perf_counter() - started
        report = json.loads((work / f"{name}.tune" / "tune_report.json").read_text())
        reference = work / f"{name}-benchmark"
        final = merge_config(spec.with_lambda(report["chosen"]["lambda"]), base_dir, [folders[t] for t in tasks], dtype=FINAL_DTYPE)
        (work / f"{name}-benchmark.yml").write_text(yaml.safe_dump(final))
        subprocess.run([*cli_command(), str(work / f"{name}-benchmark.yml"), str(reference), "--quiet",
                        "--no-copy-tokenizer"], check=True)
        rows[row_name] = {
            "benchmark_lambda": chosen_lambda, "tune_lambda": report["chosen"]["lambda"],
            "same_lambda": report["chosen"]["lambda"] == chosen_lambda,
            "merge_bit_identical": _identical(merged, reference),
            "grid": [a["values"] for a in report["axes"] if a["name"] == "lambda"][0],
            "merges": report["merges"], "evaluations": report["evaluations"],
            "merge_seconds": report.get("merge_seconds"), "evaluation_seconds": report.get("evaluation_seconds"),
            "tune_seconds": seconds, "tune_score": report["chosen_score"],
            "benchmark_validation_normalized": entry.get("validation_normalized_avg"),
        }
        print(row_name, rows[row_name], flush=True)
        shutil.rmtree(merged, ignore_errors=True)
        shutil.rmtree(reference, ignore_errors=True)
        out = write_results(rows, lines)
    return out


def write_results(rows: Dict[str, Any], lines: int) -> Dict[str, Any]:
    """llm_tune_check.{json,md}: these rows over the rows of earlier runs."""
    from benchmarks.llm.paths import RESULTS_JSON

    results_dir = Path(RESULTS_JSON).parent
    earlier = results_dir / "llm_tune_check.json"
    if earlier.exists():  # rows of methods checked by earlier runs stay
        rows = {**json.loads(earlier.read_text()).get("methods", {}), **rows}
    out = {"validation_lines": lines, "methods": rows}
    (results_dir / "llm_tune_check.json").write_text(json.dumps(out, indent=2) + "\n")
    md = ["# `mergekit-awd tune` on the LLM track's validation split", "",
          f"Command: `python -m benchmarks.llm.tune_check --methods METHOD…` (one run per row; the rows of earlier "
          f"runs are kept); {lines} validation "
          "lines exported from the track, each task's fine-tune as `--reference`.", "",
          "Evaluations count the grid's points and the four references; the seconds are tune's own "
          "(`merge_seconds`, `evaluation_seconds` of tune_report.json; blank for rows measured before they existed) "
          "and the whole command's, which also holds loading and the final `--merge`.", "",
          "| method | benchmark λ | λ grid | tune λ | same | --merge bit-identical | merges | merge s | evaluations "
          "| evaluation s | tune s |",
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def seconds(value: Optional[float]) -> str:
        return "" if value is None else f"{value:.0f}"

    for name, row in rows.items():
        md.append(f"| {name} | {row['benchmark_lambda']} | {', '.join(str(v) for v in row['grid'])} | "
                  f"{row['tune_lambda']} | {row['same_lambda']} | {row['merge_bit_identical']} | {row['merges']} | "
                  f"{seconds(row.get('merge_seconds'))} | {row['evaluations']} | {seconds(row.get('evaluation_seconds'))} "
                  f"| {row['tune_seconds']:.0f} |")
    (results_dir / "llm_tune_check.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return out


if __name__ == "__main__":
    main()
