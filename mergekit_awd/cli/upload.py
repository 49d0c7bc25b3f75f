"""``mergekit-awd upload OUT ORG/NAME`` and the publishing options shared with ``--push-to-hub``."""

from __future__ import annotations

from typing import Any, Callable, Optional

import click

from mergekit_awd.errors import HubUploadError, IncompleteOutputError
from mergekit_awd.hub.upload import UploadResult, check_write_access, upload_output


def publish_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """--private, --revision, --commit-message and --token (shared by merge and upload)."""
    options = (
        click.option("--private", is_flag=True, default=False,
                     help="Create the Hub repository as private."),
        click.option("--revision", default=None, metavar="BRANCH",
                     help="Branch to upload to (created when missing; default main)."),
        click.option("--commit-message", default=None, help="Commit message on the Hub."),
        click.option("--token", default=None, metavar="TOKEN",
                     help="Hub token with write access (default: HF_TOKEN, then the login cache)."),
    )
    for option in reversed(options):
        function = option(function)
    return function


def check_publish_target(repo_id: str, token: Optional[str], *, endpoint: Optional[str] = None) -> None:
    """Before a long merge: a valid repository id, a token the Hub accepts with write access to
    the repository's namespace (``check_write_access``), and huggingface_hub not offline.
    Raises ``click.ClickException`` (the message of the ``HubUploadError``)."""
    try:
        check_write_access(repo_id, token, endpoint=endpoint, warn=lambda line: click.echo(line, err=True))
    except HubUploadError as error:
        raise click.ClickException(str(error)) from None


def upload_for_cli(out_dir: str, repo_id: str, private: bool, revision: Optional[str],
                   commit_message: Optional[str], token: Optional[str], quiet: bool = False) -> UploadResult:
    """``upload_output`` with its errors as click errors and its progress on stderr."""
    echo = None if quiet else (lambda line: click.echo(line, err=True))
    try:
        return upload_output(out_dir, repo_id, private=private, revision=revision,
                             commit_message=commit_message, token=token, progress=not quiet, echo=echo)
    except (HubUploadError, IncompleteOutputError) as error:
        raise click.ClickException(str(error)) from None


@click.command("upload")
@click.argument("out_path", type=click.Path(file_okay=False))
@click.argument("repo_id", metavar="ORG/NAME")
@publish_options
@click.option("--quiet", is_flag=True, default=False, help="No progress display.")
def upload_command(out_path: str, repo_id: str, private: bool, revision: Optional[str],
                   commit_message: Optional[str], token: Optional[str], quiet: bool) -> None:
    """Upload the finished merge in OUT_PATH to the Hub model repository ORG/NAME."""
    upload_for_cli(out_path, repo_id, private, revision, commit_message, token, quiet)
