"""Publish a finished merge output folder to the Hugging Face Hub.

``upload_output`` refuses a folder that is not exactly what a finished merge wrote
(``output_layout.check_finished_output``: every file's digest against the completion marker, no
symbolic links, no files the merge did not write, except an edited ``README.md``), creates the
repository when needed (``create_repo(exist_ok=True)``), creates the branch for ``revision``,
and uploads the folder with ``HfApi.upload_folder`` (huggingface_hub's resumable, chunk-
deduplicating Xet pipeline with its live progress display when ``hf_xet`` is installed; the LFS
protocol otherwise).  Exactly the checked files are offered (``allow_patterns``); the completion
marker, ``.git`` and ``.cache`` are not uploaded.  Files already on the Hub are not sent again.
The folder is only read, never written.

The token comes from ``token``, else ``HF_TOKEN``, else the login cache (``hf auth login``), and
goes through ``normalise_token``: surrounding whitespace (a trailing ``\r`` from a CRLF file) is
stripped, a token still holding whitespace, a control or a non-ASCII character is refused.
Every failure becomes one ``HubUploadError`` that names the repository and never contains
the token in any form (``_redact``).  ``check_write_access`` asks the Hub's whoami whether the
token is valid and may write to the repository's namespace, before a long merge.

``publish_options`` and ``upload_command`` are the command-line face of the same function.
"""

from __future__ import annotations

import glob
import importlib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from mergekit_awd.errors import HubUploadError
from mergekit_awd.hub.tokens import redact, redacting_logs, resolve_with_source
from mergekit_awd.pipeline.output_layout import FinishedOutput, check_finished_output, upload_ignore_patterns

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


def _human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _causes(error: BaseException) -> Iterator[BaseException]:
    seen = set()
    current: Optional[BaseException] = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _http_status(error: BaseException) -> Optional[int]:
    """The HTTP status of the first Hub answer in ``error``'s chain, if any."""
    for cause in _causes(error):
        response = getattr(cause, "response", None)
        status = getattr(response, "status_code", None)
        if isinstance(status, int):
            return status
    return None


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


def _is_header_error(cause: BaseException) -> bool:
    """The HTTP client refused to build a header: a character the token must not contain."""
    if isinstance(cause, UnicodeEncodeError):
        return True
    return type(cause).__name__ in ("LocalProtocolError", "InvalidHeader") and "header" in str(cause).lower()


def _header_error_text(source: str) -> str:
    return (f"the token from {source} could not be sent: it contains a character that is not allowed in an "
            "HTTP header (a line break, a control or a non-ASCII character); copy the token again")


def describe_failure(error: BaseException, repo_id: str, out_dir: str, endpoint: str,
                     token_source: str = "--token, HF_TOKEN or the login cache") -> str:
    """One sentence on what went wrong and what to do; the caller redacts the token."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled, RevisionNotFoundError

    retry = (f" Nothing in {out_dir} was changed; run `mergekit-awd upload {out_dir} {repo_id}` "
             "to try again (files already on the Hub are not sent again).")
    chain = list(_causes(error))
    if any(_is_header_error(cause) for cause in chain):  # never quote it: it holds the token
        return f"cannot upload to {repo_id}: {_header_error_text(token_source)}." + retry
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


def check_repo_id(repo_id: str) -> None:
    """``ORG/NAME`` (or ``NAME`` in the token owner's namespace) in the Hub's spelling."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise HubUploadError(f"{repo_id!r} is not a Hub repository id (ORG/NAME): {error}",
                             repo_id=repo_id) from None


def _upload(api: Any, finished: FinishedOutput, repo_id: str, branch: str, message: str, private: bool,
            progress: bool, echo: Optional[Callable[[str], None]]) -> Tuple[Any, Any]:
    """create_repo, create_branch, upload_folder of exactly the checked files: (commit info, repo url)."""
    out_dir, files = finished.path, finished.files
    if echo is not None:
        echo(f"Uploading {len(files)} files ({_human_size(finished.total_size)}) from "
             f"{out_dir} to {api.endpoint}/{repo_id} (branch {branch})")
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
            # exactly the checked files: nothing added to the folder since is sent
            allow_patterns=[glob.escape(name) for name in files],
            ignore_patterns=upload_ignore_patterns(),
        )
    return commit, repo_url


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
    resolved, source, raws = resolve_with_source(token, repo_id)
    branch = revision or DEFAULT_BRANCH
    message = commit_message or (
        f"Upload {finished.marker.get('merge_method', 'merged')} merge made with mergekit-awd"
    )
    api = None
    try:
        with redacting_logs(resolved, *raws):
            api = HfApi(endpoint=endpoint, token=resolved, library_name="mergekit-awd")
            commit, repo_url = _upload(api, finished, repo_id, branch, message, private, progress, echo)
    except Exception as error:
        where = (api.endpoint if api is not None else None) or endpoint or constants.ENDPOINT
        text = describe_failure(error, repo_id, out_dir, where, token_source=source)
        raise HubUploadError(redact(text, resolved, *raws), repo_id=repo_id,
                             status=_http_status(error)) from None
    result = UploadResult(
        repo_id=repo_id,
        revision=branch,
        repo_url=str(repo_url),
        commit_url=commit.commit_url,
        commit_oid=commit.oid,
        files=finished.files,
    )
    if echo is not None:
        echo(f"Uploaded to {result.repo_url} (branch {branch}, commit {result.commit_oid[:10]})")
    return result


# --------------------------------------------------------------------------- command line


def _whoami_failure(error: BaseException, repo_id: str, endpoint: str, source: str) -> str:
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    chain = list(_causes(error))
    if any(_is_header_error(cause) for cause in chain):
        return f"cannot push to {repo_id}: {_header_error_text(source)}"
    for cause in chain:
        if isinstance(cause, OfflineModeIsEnabled):
            return f"cannot push to {repo_id}: huggingface_hub offline mode is on (HF_HUB_OFFLINE=1)"
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = cause.response.status_code
            if status == 401:
                return (f"the Hub at {endpoint} rejected the token from {source} (HTTP 401 Unauthorized), "
                        f"so nothing could be pushed to {repo_id}: set HF_TOKEN, run `hf auth login` or "
                        "pass --token with a valid token that has write access")
            return (f"could not check the token for {repo_id}: the Hub at {endpoint} answered HTTP {status} "
                    "to whoami")
    for cause in chain:
        if isinstance(cause, _transport_error_types()):
            return (f"could not reach {endpoint} to check the token for {repo_id} "
                    f"({type(cause).__name__}: {cause})")
    return f"could not check the token for {repo_id} ({type(error).__name__}: {error})"


def check_write_access(repo_id: str, token: Optional[str] = None, *, endpoint: Optional[str] = None,
                       warn: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:
    """Ask the Hub (``whoami``) whether the token may push to ``repo_id``; its answer, or a
    ``HubUploadError`` (never containing the token) when:

    * the Hub rejects the token (HTTP 401; ``status`` 401), or cannot be asked;
    * the token's role is ``read`` (no write access);
    * ``repo_id``'s namespace is neither the token's user nor one of their organisations.

    A fine-grained token is accepted as is: its per-repository permissions are the upload's to
    enforce.  A rate-limited whoami (HTTP 429) is not an error: ``warn`` is told and ``{}``
    returned.  The token is resolved as for the upload (``--token``, HF_TOKEN, login cache).
    """
    from huggingface_hub import HfApi, constants

    check_repo_id(repo_id)
    resolved, source, raws = resolve_with_source(token, repo_id)
    if constants.is_offline_mode():
        raise HubUploadError(
            f"cannot push to {repo_id}: huggingface_hub offline mode is on (HF_HUB_OFFLINE=1)", repo_id=repo_id
        )
    api = None
    try:
        with redacting_logs(resolved, *raws):
            api = HfApi(endpoint=endpoint, token=resolved, library_name="mergekit-awd")
            answer = api.whoami()
    except Exception as error:
        status = _http_status(error)
        where = (api.endpoint if api is not None else None) or endpoint or constants.ENDPOINT
        if status == 429:
            if warn is not None:
                warn(f"warning: the Hub at {where} rate-limited the token check (HTTP 429); "
                     f"the token's access to {repo_id} will be checked by the upload")
            return {}
        text = _whoami_failure(error, repo_id, where, source)
        raise HubUploadError(redact(text, resolved, *raws), repo_id=repo_id, status=status) from None
    if not isinstance(answer, dict):
        return {}
    auth = answer.get("auth") if isinstance(answer.get("auth"), dict) else {}
    access = auth.get("accessToken") if isinstance(auth.get("accessToken"), dict) else {}
    role = access.get("role")
    if role == "read":
        raise HubUploadError(
            f"the token from {source} is read-only: it has no write access, so it cannot push to {repo_id}; "
            "use a token with the write role (or a fine-grained token with write access to the repository)",
            repo_id=repo_id, status=403,
        )
    if role == "fineGrained":
        return answer
    user = answer.get("name")
    orgs = [org.get("name") for org in answer.get("orgs") or [] if isinstance(org, dict)]
    namespaces = [name for name in [user, *orgs] if isinstance(name, str)]
    namespace = repo_id.split("/")[0] if "/" in repo_id else user
    if namespaces and isinstance(namespace, str) and namespace.lower() not in {n.lower() for n in namespaces}:
        their_orgs = ", ".join(n for n in orgs if isinstance(n, str)) or "none"
        raise HubUploadError(
            f"cannot push to {repo_id}: {namespace!r} is neither the token's user ({user}) nor one of "
            f"their organisations ({their_orgs}); check the name, or use a token of a member of {namespace!r}",
            repo_id=repo_id, status=403,
        )
    return answer


