"""``mergekit-awd``: mergekit-yaml with this package's methods registered, plus subcommands.

    mergekit-awd CONFIG OUT [every mergekit-yaml option]     merge (the default command)
        [--push-to-hub ORG/NAME [--private] [--revision BRANCH] [--commit-message M] [--token T]]
    mergekit-awd upload OUT ORG/NAME [...]                    upload a finished output folder
    mergekit-awd inspect CONFIG [--out DIR]                   cosines, AWD and TSV figures, no merge
    mergekit-awd compress CONFIG OUT [--rank K]               TSV-C: each fine-tune as a LoRA adapter
    mergekit-awd tune CONFIG --data VAL.jsonl [--grid …]      choose λ (α, density…) on your own data

The command line only: each command is one module of this package that parses its options and
calls the library (``pipeline``, ``tools``, ``hub``); ``errors`` turns the library's errors into
one-line messages.  No library module imports click.
"""

from __future__ import annotations

from typing import List, Optional

import click

from mergekit_awd.cli.compress import compress_command
from mergekit_awd.cli.inspect import inspect_command
from mergekit_awd.cli.merge import merge_command
from mergekit_awd.cli.methods import methods_command
from mergekit_awd.cli.quiet import silence_library_noise
from mergekit_awd.cli.tune import tune_command
from mergekit_awd.cli.upload import upload_command


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
    """Merge models from a mergekit YAML file with mergekit's methods and this package's
    (`mergekit-awd methods` lists them with their parameters, defaults and ranges; the README has
    the details).

    `mergekit-awd CONFIG OUT [OPTIONS]` is `mergekit-awd merge CONFIG OUT [OPTIONS]`.
    """
    silence_library_noise()


# Subcommands live in their own modules and are attached here, one line each.
main.add_command(merge_command)
main.add_command(upload_command)
main.add_command(inspect_command)
main.add_command(compress_command)
main.add_command(methods_command)
main.add_command(tune_command)


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

