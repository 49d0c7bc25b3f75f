"""What ``mergekit-awd tune`` writes: ``tune_report.json``, ``tune.md`` and ``tune_scores.png`` (drawn by
``presentation.tune_summary``) into ``--out``, and the tuned configuration beside the input; each file
atomically (``pipeline.staging``)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict

import yaml

from mergekit_awd.constants import TUNE_LAYERWISE_PLOT, TUNE_PLOT, TUNE_REPORT, TUNE_TABLE
from mergekit_awd.pipeline.staging import atomic_write_text, staged_file
from mergekit_awd.presentation.tune_summary import layerwise_figure, score_figure, tune_table
from mergekit_awd.tools.tune_plan import TUNED_MARKER
from mergekit_awd.tools.tune_result import TuneResult


def write_tuned_config(path: str, config: Dict[str, Any], result: TuneResult) -> None:
    """``CONFIG.tuned.yml``: the configuration at the chosen point, under a header saying so."""
    header = [TUNED_MARKER, f"# chosen: {json.dumps(result.chosen)}; mean score {result.chosen_score:.4f}"]
    if result.layerwise:
        entry = result.layerwise
        header.append(f"# layer-wise ({entry['objective']}): one weight per model and group ({len(entry['groups'])} "
                      f"groups), validation score {entry['validation_score']:.4f} (the grid's best "
                      f"{entry['scalar_validation_score']:.4f}); lambda 1, the grid's other choices kept")
    atomic_write_text(path, "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False))


def write_tune_outputs(result: TuneResult, out_dir: str) -> Dict[str, str]:
    """``tune_report.json``, ``tune.md`` (a table per point and task) and, when it can be drawn, the score plot."""
    files = {"report": os.path.join(out_dir, TUNE_REPORT), "table": os.path.join(out_dir, TUNE_TABLE)}
    summary = result.to_json()
    atomic_write_text(files["table"], tune_table(summary))
    for name, filename, figure in (("plot", TUNE_PLOT, score_figure(summary)),
                                   ("layerwise_plot", TUNE_LAYERWISE_PLOT, layerwise_figure(summary))):
        if figure is not None:
            files[name] = os.path.join(out_dir, filename)
            with staged_file(files[name]) as temporary:
                figure.savefig(temporary, format="png", dpi=110)
    atomic_write_text(files["report"], json.dumps({**summary, "files": files}, indent=2, default=str) + "\n")
    return files


__all__ = ["write_tuned_config", "write_tune_outputs"]
