"""``mergekit-awd compress CONFIG OUT``: TSV-C adapters (``tools.compress``) from the command line."""

from __future__ import annotations

from typing import Optional

import click

from mergekit_awd.cli.errors import command_errors
from mergekit_awd.cli.options import settings_options
from mergekit_awd.constants import COMPRESS_REPORT
from mergekit_awd.core.tsv_compress import CompressSettings
from mergekit_awd.tools.compress import compress_family, format_report


@click.command("compress")
@click.argument("config_file")
@click.argument("out_path")
@settings_options(CompressSettings)
@click.option("--device", default="cpu", show_default=True, help="torch device for the SVDs (e.g. cuda).")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace a non-empty OUT_PATH as a whole (only once every adapter is written).")
@click.option("--quiet", is_flag=True, default=False, help="Print nothing but errors (no progress bars).")
def compress_command(config_file: str, out_path: str, rank: Optional[int], fraction: Optional[float], svd: str,
                     dtype: Optional[str], device: str, overwrite: bool, quiet: bool) -> None:
    """TSV-C: write each fine-tuned model of CONFIG_FILE as a PEFT LoRA adapter under OUT_PATH."""
    with command_errors("compress", out_path, "the adapters"):
        report = compress_family(config_file, out_path, rank=rank, fraction=fraction, svd=svd, dtype=dtype,
                                 device=device, overwrite=overwrite, progress=not quiet)
    if not quiet:
        click.echo(format_report(report))
        click.echo(f"Adapters and {COMPRESS_REPORT} written to {out_path}")
