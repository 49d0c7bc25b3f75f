"""``mergekit-awd inspect CONFIG [--out DIR]``: the figures of ``tools.inspect`` on the terminal."""

from __future__ import annotations

import os
from typing import Optional

import click
from mergekit.options import MergeOptions

from mergekit_awd.pipeline.config import load_config
from mergekit_awd.pipeline.input_paths import check_out_disjoint, config_file_of, merge_inputs
from mergekit_awd.pipeline.staging import check_output_target, staged_output
from mergekit_awd.tools.inspect import format_report, inspect_merge, save_report


@click.command("inspect")
@click.argument("config_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for inspect_report.json and the heatmap PNGs (no model is written).")
@click.option("--device", default="cpu", show_default=True, help="Device for the per-tensor arithmetic.")
@click.option("--no-tsv", "no_tsv", is_flag=True, default=False,
              help="Skip TSV interference (it needs an SVD of every task matrix).")
@click.option("--transformers-cache", default=None, help="Hugging Face cache folder for Hub models.")
@click.option("--trust-remote-code", is_flag=True, default=False, help="Trust remote code in model configs.")
@click.option("--allow-crimes", is_flag=True, default=False, help="Allow mixing architectures.")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace a non-empty --out folder as a whole (only once the report is written).")
@click.option("--quiet", is_flag=True, default=False, help="No progress bar (the table is still printed).")
def inspect_command(config_file: str, out_dir: Optional[str], device: str, no_tsv: bool,
                    transformers_cache: Optional[str], trust_remote_code: bool, allow_crimes: bool,
                    overwrite: bool, quiet: bool) -> None:
    """Report task-vector cosines, AWD's effect and TSV interference for CONFIG_FILE, without merging."""
    options = MergeOptions(transformers_cache=transformers_cache, trust_remote_code=trust_remote_code,
                           allow_crimes=allow_crimes)
    from mergekit_awd.cli.errors import command_errors

    with command_errors("inspect", out_dir, "the report"):
        if out_dir:  # before the long work: --out may not overlap an input, nor be a non-empty folder
            merge_config, _source, label = load_config(config_file)
            check_out_disjoint(out_dir, merge_inputs(merge_config, config_file_of(label), options), command="inspect")
            final_dir = check_output_target(out_dir, overwrite)
        report = inspect_merge(config_file, options, device=device, tsv=not no_tsv, progress=not quiet)
        click.echo(format_report(report))
        if out_dir:
            with staged_output(out_dir, overwrite=overwrite) as staging:
                written = [os.path.basename(path) for path in save_report(report, staging)]
            for name in written:
                click.echo(f"wrote {os.path.join(final_dir, name)}")
