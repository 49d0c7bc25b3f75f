"""``mergekit-awd``: mergekit-yaml with this package's methods registered, plus subcommands.

    mergekit-awd CONFIG OUT [every mergekit-yaml option]     merge (the default command)
"""

from __future__ import annotations

import sys
from typing import List, Optional

import click
from mergekit.options import MergeOptions, PrettyPrintHelp, add_merge_options

from mergekit_awd.config_loading import ConfigError


class DefaultCommandGroup(click.Group):
    """A group whose first argument, when it is not a subcommand name, runs ``merge``."""

    default_command = "merge"

    def parse_args(self, ctx: click.Context, args: List[str]) -> List[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultCommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mergekit-awd")
def main() -> None:
    """Merge models with AWD (and mergekit's own methods) from a mergekit YAML file.

    `mergekit-awd CONFIG OUT [OPTIONS]` is `mergekit-awd merge CONFIG OUT [OPTIONS]`.
    """


@main.command("merge", cls=PrettyPrintHelp)
@click.argument("config_file")
@click.argument("out_path")
@add_merge_options
def merge_command(merge_options: MergeOptions, config_file: str, out_path: str) -> None:
    """Run the merge in CONFIG_FILE and write the model to OUT_PATH (mergekit-yaml's options)."""
    from mergekit_awd.runner import run_merge

    merge_options.apply_global_options()
    try:
        outcome = run_merge(config_file, out_path, options=merge_options)
    except ConfigError as error:
        raise click.ClickException(str(error)) from None
    if not merge_options.quiet:
        click.echo(f"Merged model written to {outcome.out_path}")
        if outcome.report_path:
            summary = outcome.report["summary"]
            click.echo(
                f"AWD report: {outcome.report_path} (mean |cos| between task vectors "
                f"{summary['mean_abs_cos_before']:.4f} -> {summary['mean_abs_cos_after']:.4f} "
                f"over {summary['disentangled_tensors']} disentangled tensors)"
            )


# Subcommands live in their own modules and are attached here, one line each.


def run(argv: Optional[List[str]] = None) -> int:
    """Entry point for tests: returns the exit code instead of exiting."""
    try:
        main.main(args=argv, prog_name="mergekit-awd", standalone_mode=False)
    except click.ClickException as error:
        error.show()
        return error.exit_code
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
