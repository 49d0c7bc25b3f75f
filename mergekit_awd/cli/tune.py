"""``mergekit-awd tune CONFIG --data VAL.jsonl``: choose λ (and α, density…) on the user's own data
(``tools.tune``; the data format is ``tools.tune_data``)."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Dict, Iterator, Optional, Sequence, Tuple

import click

from mergekit_awd.core.layerwise import GROUPINGS
from mergekit_awd.errors import ConfigError
from mergekit_awd.mergekit_adapter.layerwise_config import LAYERWISE_METHODS
from mergekit_awd.tools.layerwise_objective import OBJECTIVES
from mergekit_awd.tools.tune_data import DEFAULT_MAX_TOKENS
from mergekit_awd.tools.tune_grid import DEFAULT_GRID, MAX_POINTS


def _pairs(values: Sequence[str], option: str) -> Dict[str, str]:
    out = {}
    for value in values:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise ConfigError(f"{option} {value!r}: expected TASK=FOLDER", key=option)
        out[name] = folder
    return out


def default_out_dir(config_file: str) -> str:
    """``CONFIG.tune/`` beside the configuration."""
    return os.path.splitext(config_file)[0] + ".tune"


@click.command("tune")
@click.argument("config_file", type=click.Path(dir_okay=False))
@click.option("--data", "data_file", required=True, type=click.Path(dir_okay=False),
              help='Validation JSONL (UTF-8): {"prompt", "answer"} or {"prompt", "choices", "label"} per line, '
                   'optional "task".')
@click.option("--grid", "grids", multiple=True, metavar="NAME=START:STOP:STEP|NAME=V1,V2",
              help=f"A tuned parameter and its values (repeatable; default {DEFAULT_GRID}; at most {MAX_POINTS} points).")
@click.option("--reference", "references", multiple=True, metavar="TASK=FOLDER",
              help="The fine-tune of a task: scores are then normalized per task (repeatable).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for tune_report.json, tune.md, the plot and the score cache (default CONFIG.tune/).")
@click.option("--merge", "merge_out", default=None, type=click.Path(file_okay=False),
              help="Merge the chosen configuration into this folder (its card says how it was chosen).")
@click.option("--cuda", is_flag=True, default=False, help="Merge and score on the GPU.")
@click.option("--batch-size", default=16, show_default=True, type=click.IntRange(min=1), help="Scoring batch size.")
@click.option("--max-new-tokens", default=16, show_default=True, type=click.IntRange(min=1),
              help="Longest greedy continuation for exact match (a longer answer is refused).")
@click.option("--max-tokens", default=DEFAULT_MAX_TOKENS, show_default=True, type=click.IntRange(min=1),
              help="Longest line in tokens (prompt with its answer, choice or continuation); at most the "
                   "model's context. Longer lines are refused before anything is merged.")
@click.option("--layerwise", is_flag=True, default=False,
              help="After the grid, learn one weight per model and per layer (AdaMerging; with awd: AWD AdaMerging) "
                   f"on the data and write it as CONFIG.tuned.yml ({', '.join(LAYERWISE_METHODS)} only).")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="likelihood", show_default=True,
              help="--layerwise: likelihood of the right answers, or entropy of the model's choices (labels unused).")
@click.option("--grouping", type=click.Choice(GROUPINGS), default="layer", show_default=True,
              help="--layerwise: one weight per transformer block (embeddings, final norm, head apart), or per model.")
@click.option("--layerwise-steps", default=100, show_default=True, type=click.IntRange(min=1),
              help="--layerwise: Adam steps (every 10, the held-out quarter of the lines chooses the step).")
@click.option("--layerwise-lr", default=1e-3, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="--layerwise: Adam's step size on the weights.")
@click.option("--methods", default=None, metavar="M1,M2,…",
              help="Choose the method too: tune each (its own λ grid unless --grid; CONFIG's base, models and the "
                   "parameters each takes) and write the best as CONFIG.tuned.yml; OUT/tune_methods.md compares them.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
def tune_command(config_file: str, data_file: str, grids: Tuple[str, ...], references: Tuple[str, ...],
                 out_dir: Optional[str], merge_out: Optional[str], cuda: bool, batch_size: int,
                 max_new_tokens: int, max_tokens: int, layerwise: bool, objective: str, grouping: str,
                 layerwise_steps: int, layerwise_lr: float, methods: Optional[str], quiet: bool) -> None:
    """Score CONFIG_FILE's merge at every point of a parameter grid on your validation data, choose the
    best, write it as CONFIG.tuned.yml beside CONFIG_FILE, and with --merge merge it.

    Methods whose output is θ_base + λ·D (task_arithmetic, ties, dare_ties, della, breadcrumbs_ties,
    and this package's methods) are merged once per value of the other parameters and moved along λ
    without merging again. Scores are cached in --out by the content of every model, the tokenizer,
    the data and the configuration: a re-run reuses them only while all are unchanged.
    """
    from mergekit_awd.cli.errors import command_errors

    out_dir = out_dir or default_out_dir(config_file)
    with command_errors("tune", merge_out, "the merge"):
        try:
            options = None
            if layerwise:
                from mergekit_awd.tools.tune_layerwise import LayerwiseOptions

                options = LayerwiseOptions(objective=objective, grouping=grouping, steps=layerwise_steps,
                                           lr=layerwise_lr, batch_size=batch_size)
            if methods is not None and (layerwise or merge_out):
                raise ConfigError("--methods chooses among the methods' scalar λ; give --layerwise or --merge "
                                  "to a tune of the chosen configuration (CONFIG.tuned.yml)", key="--methods")
            _run(config_file, data_file, grids, _pairs(references, "--reference"), out_dir, merge_out, cuda,
                 batch_size, max_new_tokens, max_tokens, quiet, options,
                 None if methods is None else [m.strip() for m in methods.split(",") if m.strip()])
        except KeyboardInterrupt as error:
            from mergekit_awd.tools.tune_cache import scored_point_count

            kept = scored_point_count(out_dir)
            raise click.ClickException(
                f"tune interrupted ({str(error) or 'Ctrl-C'}); {kept} scores kept in {out_dir} (a re-run resumes "
                f"there), no tuned configuration written" + (f", {merge_out} not written" if merge_out else "")
            ) from None


@contextmanager
def _transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' own progress bars ("Loading weights", once per loaded model) off unless ``enabled``;
    the previous setting restored afterwards."""
    from transformers.utils import logging as transformers_logging

    before = transformers_logging.is_progress_bar_enabled()
    if not enabled:
        transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        (transformers_logging.enable_progress_bar if before else transformers_logging.disable_progress_bar)()


def _data_check(data, max_tokens: int, max_new_tokens: int):
    """``prepare`` for tune: every line of ``data`` fits, by the base model's tokenizer and context."""
    def check(plan) -> None:
        from transformers import AutoTokenizer

        from mergekit_awd.tools.tune_data import check_lengths, model_context

        tokenizer = AutoTokenizer.from_pretrained(plan.base)
        context = model_context(plan.base)
        check_lengths(data, tokenizer, min(max_tokens, context or max_tokens), max_new_tokens)

    return check


def _run(config_file: str, data_file: str, grids: Sequence[str], reference_models: Dict[str, str], out_dir: str,
         merge_out: Optional[str], cuda: bool, batch_size: int, max_new_tokens: int, max_tokens: int,
         quiet: bool, layerwise: Optional[Any] = None, methods: Optional[Sequence[str]] = None) -> None:
    import torch
    from mergekit.options import MergeOptions

    from mergekit_awd.pipeline.devices import check_merge_devices
    from mergekit_awd.presentation.tune_summary import cache_line
    from mergekit_awd.tools.tune import parse_grid, tune_merge
    from mergekit_awd.tools.tune_data import read_tuning_data, score_model
    from mergekit_awd.tools.tune_layerwise import LayerwiseRequest
    from transformers import AutoTokenizer

    options = MergeOptions(cuda=cuda)
    check_merge_devices(options)

    axes = [parse_grid(text) for text in grids]
    data = read_tuning_data(data_file)  # every line checked before anything is merged or written
    device = torch.device("cuda" if cuda else "cpu")

    def load_model(folder: str):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        load_model.tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        return model.to(device).eval()

    def scorer(model, tasks) -> Dict[str, Dict[str, float]]:
        with torch.inference_mode():
            return score_model(model, load_model.tokenizer, data, batch_size=batch_size,
                               max_new_tokens=max_new_tokens, tasks=tasks)

    scoring = {"scorer": "tune_data.score_model", "batch_size": batch_size, "max_new_tokens": max_new_tokens,
               "device": device.type}
    def run_tune(config, out, grid, merge=None, layerwise_request=None):
        return tune_merge(config, scorer, load_model, out, grid, reference_models=reference_models,
                          merge_out=merge, cuda=cuda, quiet=quiet, data_digest=data.digest,
                          data_path=data_file, tasks=[t.name for t in data.tasks], scoring=scoring,
                          prepare=_data_check(data, max_tokens, max_new_tokens), layerwise=layerwise_request)

    with _transformers_bars(enabled=not quiet):
        if methods is not None:
            _choose_method(config_file, methods, out_dir, run_tune, axes, data_file, reference_models)
            return
        result = run_tune(config_file, out_dir, axes, merge_out, None if layerwise is None else LayerwiseRequest(
            layerwise, data.tasks, AutoTokenizer.from_pretrained))
    click.echo(f"tune: {len(result.points)} points ({result.merges} merges in {result.merge_seconds:.0f} s, "
               f"{result.evaluations} evaluations in {result.evaluation_seconds:.0f} s) in {result.seconds:.0f} s")
    click.echo(f"cache: {cache_line(result.to_json())}")
    if result.layerwise:
        entry = result.layerwise
        click.echo(f"layer-wise ({entry['objective']}, {len(entry['groups'])} groups, best step {entry['best_step']} "
                   f"of {entry['steps']}, {entry['seconds']:.0f} s, peak memory {entry['peak_memory_gib']:.1f} GiB): "
                   f"validation score {entry['validation_score']:.4f} (the grid's best {entry['scalar_validation_score']:.4f})")
    click.echo(f"chosen: {', '.join(f'{k} = {v}' for k, v in result.chosen.items())} "
               f"(mean score {result.chosen_score:.4f})")
    if result.tuned_config:
        click.echo(f"wrote {result.tuned_config}")
    for path in result.files.values():
        click.echo(f"wrote {path}")
    if result.merged:
        click.echo(f"merged into {result.merged}")


def _choose_method(config_file: str, methods: Sequence[str], out_dir: str, run_tune, axes, data_file: str,
                   reference_models: Dict[str, str]) -> None:
    """``--methods``: every method tuned, the best written as CONFIG.tuned.yml (``tools.tune_methods``)."""
    from mergekit_awd.tools.tune_methods import tune_methods
    from mergekit_awd.tools.tune_plan import DATA_ROLE, reference_role

    others = [(DATA_ROLE, data_file), *((reference_role(t), f) for t, f in reference_models.items())]
    result = tune_methods(config_file, methods, out_dir, run_tune, axes, others)
    for method, entry in sorted(result.methods.items(), key=lambda item: -item[1]["score"]):
        chosen = ", ".join(f"{k} = {v}" for k, v in entry["chosen"].items())
        click.echo(f"{method}: {chosen} (mean score {entry['score']:.4f}, {entry['seconds']:.0f} s)"
                   + ("  <- chosen" if method == result.winner else ""))
    click.echo(f"wrote {result.tuned_config}")
    for path in result.files.values():
        click.echo(f"wrote {path}")
