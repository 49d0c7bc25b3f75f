"""Python API: run a merge with this package's methods through mergekit's own pipeline."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from mergekit.card import modelref_md
from mergekit.config import MergeConfiguration
from mergekit.merge_methods import get as get_method
from mergekit.options import MergeOptions

from mergekit_awd.constants import CARD_FILENAME, COMPLETION_MARKER
from mergekit_awd.errors import PostMergeError
from mergekit_awd.mergekit_adapter.context import MergeContext
from mergekit_awd.mergekit_adapter.registration import method_for, register_methods
from mergekit_awd.mergekit_adapter.report import MergeReport, MergeReportData
from mergekit_awd.pipeline.config import ConfigInput, load_config
from mergekit_awd.pipeline.devices import check_merge_devices
from mergekit_awd.pipeline.estimate import PRINT_ABOVE_SECONDS, estimate_merge
from mergekit_awd.pipeline.input_paths import check_out_disjoint, config_file_of, merge_inputs
from mergekit_awd.pipeline.mergekit_run import run_mergekit
from mergekit_awd.pipeline.output_layout import write_completion_marker
from mergekit_awd.pipeline.read_errors import model_read_errors
from mergekit_awd.pipeline.staging import check_output_target, staged_output
from mergekit_awd.pipeline.validation import validate_merge
from mergekit_awd.presentation.card import append_card_note, task_vector_models, write_model_card
from mergekit_awd.progress import tracking_merge
from mergekit_awd.results import JsonResult


@dataclass(frozen=True)
class MergeOutcome(JsonResult):
    """Where a merge went: the output folder and, for our methods, its report (the method's
    ``report_filename`` in the folder, and the same content as ``report``)."""

    out_path: str
    report_path: Optional[str]
    report: Optional[MergeReportData]


def _resolved_parameters(config: MergeConfiguration) -> Dict[str, Any]:
    method = get_method(config.merge_method)
    values = {p.name: p.default for p in method.spec.shared_parameters}
    values.update(config.parameters or {})
    # ConditionalParameter (filters) and gradients become plain JSON structures.
    values = json.loads(json.dumps(values, default=lambda o: o.model_dump() if hasattr(o, "model_dump") else str(o)))
    ours = method_for(config.merge_method)
    return ours.resolved_parameters(values) if ours is not None else values


def build_options(options: Union[MergeOptions, Dict[str, Any], None], overrides: Dict[str, Any]) -> MergeOptions:
    if isinstance(options, MergeOptions):
        data = options.model_dump()
    else:
        data = dict(options or {})
    data.update(overrides)
    return MergeOptions(**data)


def _normalise_mergekit_card(staging: str, out_path: str, config: MergeConfiguration) -> None:
    """Make mergekit's README.md name the final folder and list the models in config order.

    mergekit titles the card with the folder it wrote to (our temporary one) and lists
    ``config.referenced_models()``, a set whose order changes from process to process.
    """
    card = os.path.join(staging, CARD_FILENAME)
    if not os.path.isfile(card):
        return
    with open(card, encoding="utf-8") as handle:
        lines = handle.read().replace(os.path.basename(staging), os.path.basename(out_path)).split("\n")
    bullets = ["* " + modelref_md(m) for m in task_vector_models(config)]
    positions = [i for i, line in enumerate(lines) if line in bullets]
    if positions and positions == list(range(positions[0], positions[0] + len(bullets))):
        lines[positions[0]:positions[0] + len(bullets)] = bullets
    with open(card, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))


def _attempt(failures: List[Tuple[str, str]], step: str, function: Callable[..., Any], *args: Any) -> Any:
    """Run a step after the merge finished; record its failure (and return None) instead of losing the merge."""
    try:
        return function(*args)
    except Exception as error:
        failures.append((step, f"{type(error).__name__}: {error}"))
        return None


def _post_merge_error(outcome: MergeOutcome, failures: List[Tuple[str, str]]) -> PostMergeError:
    steps = "; ".join(f"{step} failed ({reason})" for step, reason in failures)
    marker_missing = any(COMPLETION_MARKER in step for step, _ in failures)
    error = PostMergeError(
        f"the merge finished and {outcome.out_path} holds the complete merged weights, but {steps}"
        + (f"; without {COMPLETION_MARKER} `mergekit-awd upload` refuses the folder: re-run the merge "
           "to publish it" if marker_missing else ""),
        path=outcome.out_path, failures=failures, outcome=outcome,
    )
    return error


@contextmanager
def lora_merge_cache(config: MergeConfiguration, options: MergeOptions) -> Iterator[MergeOptions]:
    """``options`` with a LoRA merge cache: the user's ``--lora-merge-cache``, or, when a model is
    given as ``base+lora`` and none was given, a temporary folder removed afterwards (mergekit
    writes each base+LoRA model there before merging)."""
    if options.lora_merge_cache or not any(m.lora is not None for m in config.referenced_models()):
        yield options
        return
    cache = tempfile.mkdtemp(prefix="mergekit-awd-lora-")
    try:
        yield options.model_copy(update={"lora_merge_cache": cache})
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def run_merge(
    config: ConfigInput,
    out_path: Union[str, os.PathLike],
    options: Union[MergeOptions, Dict[str, Any], None] = None,
    *,
    overwrite: bool = False,
    card_note: Optional[str] = None,
    **option_overrides: Any,
) -> MergeOutcome:
    """Merge as ``mergekit-awd CONFIG OUT`` does.

    ``config``: a YAML path, YAML text, a dict or a MergeConfiguration.  ``options``: mergekit's
    MergeOptions (or a dict of its fields); keyword overrides such as ``cuda=True`` win.
    The configuration is checked before anything is read or written (``ConfigError``).  The merge
    is written into a temporary folder beside ``out_path`` and moved into place when it finished;
    an existing non-empty ``out_path`` is refused unless ``overwrite``.  Our methods write their
    report (``awd_report.json``, ``tsv_report.json``: the method's ``report_filename``) into it.
    LoRA inputs (``model: base+path/to/lora``) need no option: without ``lora_merge_cache`` a
    temporary one is used and removed (``lora_merge_cache``).  ``card_note``: a paragraph added to
    the model card (``mergekit-awd tune`` says there how the parameters were chosen).
    """
    register_methods()
    merge_options = build_options(options, option_overrides)
    check_merge_devices(merge_options)  # before anything is read
    merge_config, source, label = load_config(config)
    with lora_merge_cache(merge_config, merge_options) as merge_options:
        return _run(merge_config, source, label, merge_options, out_path, overwrite, card_note)


def _run(merge_config: MergeConfiguration, source: str, label: str, merge_options: MergeOptions,
         out_path: Union[str, os.PathLike], overwrite: bool, card_note: Optional[str] = None) -> MergeOutcome:
    method = method_for(merge_config.merge_method)
    validate_merge(merge_config, label, method, allow_crimes=merge_options.allow_crimes, options=merge_options)
    inputs = merge_inputs(merge_config, config_file_of(label), merge_options)
    check_out_disjoint(os.fspath(out_path), inputs, command="merge")
    final_path = check_output_target(os.fspath(out_path), overwrite)
    report_data: Optional[MergeReportData] = None
    failures: List[Tuple[str, str]] = []
    with staged_output(os.fspath(out_path), overwrite=overwrite) as staging:
        # our bar replaces mergekit's generic ones (never nested); --quiet silences both
        ours_visible = method is not None and not merge_options.quiet
        mergekit_options = merge_options.model_copy(update={"quiet": True}) if ours_visible else merge_options
        report = MergeReport()
        with model_read_errors(), tracking_merge(merge_config.merge_method, ours_visible) as progress:
            estimate = estimate_merge(merge_config, method, on_cpu=(merge_options.device or "cpu") == "cpu")
            if estimate is not None and estimate.seconds >= PRINT_ABOVE_SECONDS:
                progress.note(estimate.line())
            progress.note(f"reading {len(merge_config.referenced_models())} models and planning")
            context = MergeContext(report=report, progress=progress)
            card_failures = run_mergekit(merge_config, staging, mergekit_options, context, config_source=source)
        # The weights are complete: nothing after this point may discard them.
        failures += card_failures
        _attempt(failures, "the model card title", _normalise_mergekit_card, staging, final_path, merge_config)
        if method is not None:
            models: List[str] = sorted(str(m) for m in merge_config.referenced_models())
            parameters = _resolved_parameters(merge_config)
            report_data = _attempt(failures, "the merge report", report.result,
                                   merge_config.merge_method, parameters, models)
            if report_data is not None:
                _attempt(failures, method.report_filename, report_data.write,
                         os.path.join(staging, method.report_filename))
                _attempt(failures, "the model card", write_model_card, staging, merge_config, report_data.to_json())
        if card_note:
            _attempt(failures, "the model card note", append_card_note, staging, card_note)
        _attempt(failures, f"the completion marker {COMPLETION_MARKER}", write_completion_marker,
                 staging, {"merge_method": merge_config.merge_method})
    report_path = os.path.join(final_path, method.report_filename) if method else None
    outcome = MergeOutcome(final_path, report_path, report_data)
    if failures:
        raise _post_merge_error(outcome, failures)
    return outcome
