"""Write a mergekit YAML for the saved model folders and run it with the ``mergekit-awd`` CLI.

Every merge of both tracks goes through this path: YAML file -> ``mergekit-awd CONFIG OUT
--no-copy-tokenizer --quiet --random-seed 0`` in a subprocess.  ``seconds`` is the wall time of that
subprocess (Python start-up, loading, merging and writing included).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import yaml

CLI_FLAGS: List[str] = ["--no-copy-tokenizer", "--quiet", "--random-seed", "0"]


@dataclass(frozen=True)
class MergeSpec:
    """One merge: method, shared parameters (``lambda``, ``alpha`` ...) and per-model parameters
    (``weight``, ``density`` ...) applied to every fine-tuned model alike."""

    method: str
    parameters: Mapping[str, Any] = field(default_factory=dict)
    model_parameters: Mapping[str, Any] = field(default_factory=dict)

    def label(self) -> Dict[str, Any]:
        return {**dict(self.parameters), **dict(self.model_parameters)}

    def with_lambda(self, lam: float) -> "MergeSpec":
        return MergeSpec(self.method, {**dict(self.parameters), "lambda": lam}, dict(self.model_parameters))


def spec_from_params(params: Mapping[str, Any]) -> "tuple[MergeSpec, float]":
    """(spec without λ, λ) from a results row's flattened ``params`` (``merge_method``, shared and
    per-model parameters together), split by the method's own parameter scopes."""
    import mergekit_awd  # noqa: F401  (registers this package's methods)
    from mergekit.merge_methods import get
    from mergekit.merge_methods.base import ParameterScope

    flat = dict(params)
    method = flat.pop("merge_method")
    lam = float(flat.pop("lambda"))
    per_model = {p.name for p in get(method).spec.parameters if p.scope != ParameterScope.SHARED}
    return (MergeSpec(method, {k: v for k, v in flat.items() if k not in per_model},
                      {k: v for k, v in flat.items() if k in per_model}), lam)


@dataclass(frozen=True)
class MergeRun:
    out_dir: Path
    seconds: float
    report: Optional[Dict[str, Any]]


def merge_config(spec: MergeSpec, base_dir: Path, model_dirs: Sequence[Path], dtype: str = "float32",
                 ) -> Dict[str, Any]:
    """The mergekit configuration dict (``dtype``: the merge's output dtype, float32 by default)."""
    return {
        "merge_method": spec.method,
        "base_model": str(base_dir),
        "models": [{"model": str(d), "parameters": dict(spec.model_parameters)} for d in model_dirs],
        "parameters": dict(spec.parameters),
        "dtype": dtype,
    }


def config_key(config: Mapping[str, Any]) -> str:
    """Stable short hash of a configuration (used to name merge folders and cache records)."""
    text = json.dumps(config, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cli_command() -> List[str]:
    """The installed ``mergekit-awd`` entry point next to this interpreter (or on PATH, or ``python -m``)."""
    script = Path(sys.executable).parent / "mergekit-awd"
    if script.exists():
        return [str(script)]
    found = shutil.which("mergekit-awd")
    return [found] if found else [sys.executable, "-m", "mergekit_awd.cli"]


def report_file(out_dir: Path, method: str) -> Optional[Path]:
    """Where a merge by ``method`` writes its report (our methods' ``report_filename``); None for
    mergekit's own methods, which write none."""
    from mergekit_awd.mergekit_adapter.registration import method_for

    ours = method_for(method)
    return out_dir / ours.report_filename if ours is not None else None


def invoke_cli(arguments: Sequence[str]) -> "tuple[int, str]":
    """(exit status, stdout + stderr) of ``mergekit-awd ARGUMENTS`` in a subprocess, offline.

    The one place a merge leaves this process: the tests replace it with an in-process call of
    ``mergekit_awd.cli.run`` (the same command, without the interpreter's start-up)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([*cli_command(), *arguments], env=env, capture_output=True, text=True)
    return result.returncode, f"{result.stdout}\n{result.stderr}"


def run_cli_merge(config: Mapping[str, Any], work_dir: Path) -> MergeRun:
    """Write ``work_dir/config.yml``, merge into ``work_dir/model``; raise with the CLI's output on failure."""
    out_dir = work_dir / "model"
    shutil.rmtree(out_dir, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = work_dir / "config.yml"
    config_path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    start = time.perf_counter()
    returncode, output = invoke_cli([str(config_path), str(out_dir), *CLI_FLAGS])
    seconds = time.perf_counter() - start
    if returncode != 0:
        raise RuntimeError(f"mergekit-awd failed ({returncode}) on {config_path}:\n{output}")
    report_path = report_file(out_dir, config["merge_method"])
    report = json.loads(report_path.read_text()) if report_path is not None and report_path.exists() else None
    return MergeRun(out_dir=out_dir, seconds=seconds, report=report)


def registered_methods() -> List[str]:
    """Merge methods mergekit knows once mergekit_awd is imported (``tsv`` appears when it exists)."""
    import mergekit.merge_methods as methods

    import mergekit_awd  # noqa: F401  (registers our methods)

    return [m.spec.name for m in methods.registered_methods()]
