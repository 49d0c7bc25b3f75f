"""``mergekit-awd compress CONFIG OUT``: TSV-C adapters (``tools.compress``) from the command line."""

from __future__ import annotations

from typing import Optional

import click

from mergekit_awd.core.tsv import SVD_METHODS
from mergekit_awd.constants import COMPRESS_REPORT
from mergekit_awd.tools.compress import DTYPES, compress_family, format_report


@click.command("compress")
@click.argument("config_file")
@click.argument("out_path")
@click.option("--rank", type=int, default=None, help="LoRA rank k for every matrix (capped at min(m, n)).")
@click.option("--fraction", type=float, default=None,
              help="k = floor(fraction * min(m, n)); default: the paper's floor(min(m, n) / K).")
@click.option("--svd", type=click.Choice(list(SVD_METHODS)), default="exact", show_default=True,
              help="exact: torch.linalg.svd; lowrank: seeded randomized SVD.")
@click.option("--dtype", type=click.Choice(sorted(DTYPES)), default=None,
              help="dtype of the saved adapter tensors (default: the base model's).")
@click.option("--device", default="cpu", show_default=True, help="torch device for the SVDs (e.g. cuda).")
@click.option("--overwrite", is_flag=True, default=False,
              help="Replace a non-empty OUT_PATH as a whole (only once every adapter is written).")
@click.option("--quiet", is_flag=True, default=False, help="Print nothing but errors.")
def compress_command(config_file: str, out_path: str, rank: Optional[int], fraction: Optional[float], svd: str,
                     dtype: Optional[str], device: str, overwrite: bool, quiet: bool) -> None:
    """TSV-C: write each fine-tuned model of CONFIG_FILE as a PEFT LoRA adapter under OUT_PATH."""
    from mergekit_awd.cli.errors import command_errors

    with command_errors("compress", out_path, "the adapters"):
        report = compress_family(config_file, out_path, rank=rank, fraction=fraction, svd=svd, dtype=dtype,
                                 device=device, overwrite=overwrite)
    if not quiet:
        click.echo(format_report(report))
        click.echo(f"Adapters and {COMPRESS_REPORT} written to {out_path}")
