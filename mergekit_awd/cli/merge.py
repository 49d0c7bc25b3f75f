"""``mergekit-awd CONFIG OUT [every mergekit-yaml option]``: the merge command."""

from __future__ import annotations

from typing import Optional

import click
from mergekit.options import MergeOptions, PrettyPrintHelp, add_merge_options

from mergekit_awd.cli.errors import command_errors
from mergekit_awd.cli.upload import check_publish_target, publish_options, upload_for_cli


@click.command("merge", cls=PrettyPrintHelp)
@click.argument("config_file", metavar="CONFIG_FILE")
@click.argument("out_path", metavar="OUT_PATH")
@click.option("--push-to-hub", "push_to_hub", default=None, metavar="ORG/NAME",
              help="After a successful merge, upload OUT_PATH to this Hub model repository.")
@publish_options
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace OUT_PATH if it exists and is not empty (it is only replaced once the merge finished).")
@add_merge_options
def merge_command(merge_options: MergeOptions, config_file: str, out_path: str, push_to_hub: Optional[str],
                  private: bool, revision: Optional[str], commit_message: Optional[str],
                  token: Optional[str], overwrite: bool) -> None:
    """Run the merge in CONFIG_FILE and write the model to OUT_PATH (mergekit-yaml's options).

    CONFIG_FILE: a mergekit YAML (merge_method, base_model, models, parameters); this package adds
    its own methods (`mergekit-awd methods` lists them and their parameters).
    OUT_PATH: the output folder; it may not be, contain or lie inside any input, and a non-empty one
    needs --overwrite (it is replaced only once the merge finished).
    """
    from mergekit_awd.pipeline.runner import run_merge

    if push_to_hub is None and (private or revision or commit_message or token):
        raise click.UsageError("--private, --revision, --commit-message and --token need --push-to-hub")
    if push_to_hub is not None:
        check_publish_target(push_to_hub, token)
    apply_global_options(merge_options)
    with command_errors("merge", out_path, "the merge", verbose=bool(merge_options.verbosity),
                        traceback_hint="; -v shows the traceback"):
        outcome = run_merge(config_file, out_path, options=merge_options, overwrite=overwrite)
    if not merge_options.quiet:
        click.echo(f"Merged model written to {outcome.out_path}")
        if outcome.report_path:
            summary = outcome.report.summary
            line = f"Report: {outcome.report_path}"
            if summary["disentangled_tensors"]:
                line += (f" (mean |cos| between task vectors {summary['mean_abs_cos_before']:.4f} -> "
                         f"{summary['mean_abs_cos_after']:.4f} over {summary['disentangled_tensors']} disentangled tensors)")
            if summary.get("tensors_where_delta_cancels"):
                line += (f" (δ cancels out of the merge on {summary['tensors_where_delta_cancels']} tensors: the "
                         "weights of the disentangled models sum to zero, so there the merge is task arithmetic)")
            if "singular_task_interference" in summary:
                line += f" (singular task interference {summary['singular_task_interference']:.4g})"
            click.echo(line)
    if push_to_hub is not None:
        upload_for_cli(outcome.out_path, push_to_hub, private, revision, commit_message, token,
                       quiet=merge_options.quiet)


def apply_global_options(merge_options: MergeOptions) -> None:
    """mergekit's ``apply_global_options`` (logging, seed, ``-j`` threads), callable more than once.

    torch accepts ``set_num_interop_threads`` only once per process; a second in-process merge with
    ``-j`` (the Python ``run`` entry point, a notebook) keeps the inter-op pool it has, as
    ``mergekit-yaml`` would in a new process, and still sets the intra-op thread count.
    """
    import torch

    try:
        merge_options.apply_global_options()
    except RuntimeError as error:
        if "interop threads" not in str(error):
            raise
        torch.set_num_threads(merge_options.num_threads)
