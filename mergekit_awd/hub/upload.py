"""Publish a finished merge output folder to the Hugging Face Hub.

``upload_output`` refuses a folder that is not a finished merge (``output_layout``), creates the
repository when needed (``create_repo(exist_ok=True)``), creates the branch for ``revision``,
and uploads the folder with ``HfApi.upload_folder`` (huggingface_hub's resumable, chunk-
deduplicating Xet pipeline with its live progress display when ``hf_xet`` is installed; the LFS
protocol otherwise).  Files already on the Hub are not sent again.  The completion marker is
not uploaded.  The folder is only read, never written.

The token comes from ``token``, else ``HF_TOKEN``, else the login cache (``hf auth login``).
Every failure becomes one ``HubUploadError`` that names the repository and never contains
the token.

``publish_options`` and ``upload_command`` are the command-line face of the same function.
"""

from __future__ import annotations

import importlib
import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional, Tuple

import click

from mergekit_awd.errors import HubUploadError, IncompleteOutputError
from mergekit_awd.output_layout import COMPLETION_MARKER, check_finished_output

DEFAULT_BRANCH = "main"


@dataclass(frozen=True)
class UploadResult:
    """Where the folder went: repository, branch, commit and the files offered for upload."""

    repo_id: str
    revision: str
    repo_url: str
    commit_url: str
    commit_oid: str
    files: Tuple[str, ...]


def _folder_files(out_dir: str) -> List[Tuple[str, int]]:
    """(path in the repository, size) of every file that will be offered for upload."""
    found = []
    for root, dirs, names in os.walk(out_dir):
        dirs[:] = [d for d in dirs if d not in (".git", ".cache")]
        for name in names:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, out_dir).replace(os.sep, "/")
            if relative != COMPLETION_MARKER:
                found.append((relative, os.path.getsize(path)))
    return sorted(found)


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _redact(text: str, token: Optional[str]) -> str:
    return text.replace(token, "***") if token and len(token) >= 8 else text


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _transport_error_types() -> Tuple[type, ...]:
    """Connection-level errors of whichever HTTP client this huggingface_hub uses."""
    types: List[type] = [ConnectionError, TimeoutError]
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"),
                         ("requests", "ConnectionError"), ("requests", "Timeout")):
        try:
            types.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(types)


def describe_failure(error: BaseException, repo_id: str, out_dir: str, endpoint: str) -> str:
    """One sentence on what went wrong and what to do; the caller redacts the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionNotFoundError

    retry = (f" Nothing in {out_dir} was changed; run `mergekit-awd upload {out_dir} {repo_id}` "
             "to try again (files already on the Hub are not sent again).")
    chain = list(_causes(error))
    for cause in chain:
        if isinstance(cause, OfflineModeIsEnabled):
            return (f"cannot upload to {repo_id}: huggingface_hub offline mode is on "
                    "(HF_HUB_OFFLINE=1); unset it to upload." + retry)
        if isinstance(cause, RevisionNotFoundError):
            return f"branch not found in {repo_id} (HTTP 404)." + retry
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            if status == 401:
                return (f"the Hub at {endpoint} rejected the token for {repo_id} (HTTP 401 "
                        "Unauthorized): set HF_TOKEN, run `hf auth login` or pass --token with a "
                        "token that has write access." + retry)
            if status == 403:
                return (f"the token has no write access to {repo_id} (HTTP 403 Forbidden)." + retry)
            if status == 404:
                return (f"repository {repo_id} not found at {endpoint} (HTTP 404): check its name "
                        "and that the token can see it." + retry)
            server_message = str(cause).splitlines()[0] if str(cause) else ""
            return f"the Hub answered HTTP {status} for {repo_id}: {server_message}." + retry
    transport = _transport_error_types()
    for cause in chain:
        if isinstance(cause, transport):
            return (f"the connection to {endpoint} was lost while uploading to {repo_id} "
                    f"({type(cause).__name__}: {cause})." + retry)
    return f"upload to {repo_id} failed ({type(error).__name__}: {error})." + retry


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Turn huggingface_hub's progress display off inside the block when ``enabled`` is False."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


def resolve_token(token: Optional[str], repo_id: str) -> str:
    """``token``, else HF_TOKEN, else the login cache; an error naming ``repo_id`` when none."""
    from huggingface_hub import get_token

    resolved = token or get_token()
    if not resolved:
        raise HubUploadError(
            f"no Hugging Face token to upload to {repo_id}: set HF_TOKEN, run `hf auth login` "
            "or pass --token"
        )
    return resolved


def check_repo_id(repo_id: str) -> None:
    """``ORG/NAME`` (or ``NAME`` in the token owner's namespace) in the Hub's spelling."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubUploadError(f"{repo_id!r} is not a Hub repository id (ORG/NAME): {error}") from None


def upload_output(
    out_dir: str,
    repo_id: str,
    *,
    private: bool = False,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    token: Optional[str] = None,
    endpoint: Optional[str] = None,
    progress: bool = True,
    echo: Optional[Callable[[str], None]] = None,
) -> UploadResult:
    """Upload the finished merge in ``out_dir`` to the model repository ``repo_id``.

    private:  create the repository as private (an existing repository keeps its visibility).
    revision: branch to commit to (created from main when missing); default main.
    endpoint: Hub URL; default ``HF_ENDPOINT`` or https://huggingface.co.
    echo:     receives a line before and after the upload (the command line passes click.echo).
    Raises ``IncompleteOutputError`` for an unfinished folder, ``HubUploadError`` otherwise.
    """
    from huggingface_hub import HfApi, constants

    check_repo_id(repo_id)
    finished = check_finished_output(out_dir)
    resolved = resolve_token(token, repo_id)
    api = HfApi(endpoint=endpoint, token=resolved, library_name="mergekit-awd")
    branch = revision or DEFAULT_BRANCH
    files = _folder_files(out_dir)
    message = commit_message or (
        f"Upload {finished.marker.get('merge_method', 'merged')} merge made with mergekit-awd"
    )
    if echo is not None:
        echo(f"Uploading {len(files)} files ({_human_size(sum(s for _, s in files))}) from "
             f"{out_dir} to {api.endpoint}/{repo_id} (branch {branch})")
    try:
        with _progress_bars(progress):
            repo_url = api.create_repo(repo_id, repo_type="model", private=True if private else None,
                                       exist_ok=True)
            if branch != DEFAULT_BRANCH:
                api.create_branch(repo_id, branch=branch, repo_type="model", exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                folder_path=out_dir,
                repo_type="model",
                revision=branch,
                commit_message=message,
                ignore_patterns=[COMPLETION_MARKER],
            )
    except Exception as error:
        text = describe_failure(error, repo_id, out_dir, api.endpoint or constants.ENDPOINT)
        raise HubUploadError(_redact(text, resolved)) from None
    result = UploadResult(
        repo_id=repo_id,
        revision=branch,
        repo_url=str(repo_url),
        commit_url=commit.commit_url,
        commit_oid=commit.oid,
        files=tuple(name for name, _ in files),
    )
    if echo is not None:
        echo(f"Uploaded to {result.repo_url} (branch {branch}, commit {result.commit_oid[:10]})")
    return result


# --------------------------------------------------------------------------- command line


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


def check_publish_target(repo_id: str, token: Optional[str]) -> None:
    """Before a long merge: a valid repository id, a token, and huggingface_hub not offline."""
    from huggingface_hub import constants

    try:
        check_repo_id(repo_id)
        resolve_token(token, repo_id)
    except HubUploadError as error:
        raise click.ClickException(str(error)) from None
    if constants.is_offline_mode():
        raise click.ClickException(
            f"cannot push to {repo_id}: huggingface_hub offline mode is on (HF_HUB_OFFLINE=1)"
        )


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
