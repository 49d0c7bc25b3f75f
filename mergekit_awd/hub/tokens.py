"""Hugging Face tokens: where they come from, what a valid one looks like, and never showing one.

``resolve_token`` takes ``--token``, else ``HF_TOKEN``, else the login cache (``hf auth login``),
through ``normalise_token``: surrounding whitespace (a trailing ``\r`` from a CRLF file) is
stripped, and a token still holding whitespace, a control or a non-ASCII character is refused
without quoting it.  ``redact`` removes every spelling of a token from a text (as is, escaped,
URL-encoded, inside an HTTP header's bytes repr), and ``redacting_logs`` does the same for the log
records of the HTTP stack while a request runs.
"""

from __future__ import annotations

import json
import logging
import os
import re
from contextlib import contextmanager
from typing import Any, Iterator, List, Optional, Tuple
from urllib.parse import quote, quote_plus

from mergekit_awd.errors import HubUploadError

# Shortest token form that is redacted: shorter strings are too common in ordinary text.
_MIN_SECRET_CHARS = 4
_NOT_TOKEN_CHAR = re.compile(r"[^\x21-\x7e]")  # whitespace, controls, non-ASCII


def _secret_forms(token: str) -> List[str]:
    """Every spelling of ``token`` an error message may carry: as is, stripped, ``repr``'s and
    JSON's escapes, the bytes repr of an HTTP header (``b'Bearer …'``), URL-encoded, and the
    pieces between whitespace or control characters."""
    forms = set()
    for value in {token, token.strip()}:
        forms.update({
            value,
            repr(value)[1:-1],
            json.dumps(value)[1:-1],
            repr(value.encode("utf-8", "backslashreplace"))[2:-1],
            repr(value.encode("latin-1", "backslashreplace"))[2:-1],
            quote(value), quote(value, safe=""), quote_plus(value), quote_plus(value, safe=""),
        })
        forms.update(_NOT_TOKEN_CHAR.split(value))
    return sorted((f for f in forms if len(f) >= _MIN_SECRET_CHARS), key=len, reverse=True)


def redact(text: str, *tokens: Optional[str]) -> str:
    """``text`` with every form of every token (``_secret_forms``) replaced by ``***``."""
    for token in tokens:
        if token:
            for form in _secret_forms(token):
                text = text.replace(form, "***")
    return text


class _RedactingFilter(logging.Filter):
    """Rewrites a log record (message, arguments, exception text) without the tokens."""

    def __init__(self, tokens: Tuple[str, ...]) -> None:
        super().__init__()
        self.tokens = tokens

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record that cannot be formatted: drop its arguments
            message = str(record.msg)
        redacted = redact(message, *self.tokens)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info), *self.tokens)
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact(record.exc_text, *self.tokens)
        return True


# Loggers of the HTTP stack that may log a request's headers or an exception quoting them.
_HTTP_LOGGERS = ("httpcore", "httpx", "huggingface_hub", "urllib3", "requests", "hf_xet")


@contextmanager
def redacting_logs(*tokens: Optional[str]) -> Iterator[None]:
    """While the block runs, no record of the HTTP stack's loggers, nor any record reaching the
    root logger's handlers, carries a token (an HTTP library logs its header errors at DEBUG)."""
    secrets = tuple(t for t in tokens if t)
    log_filter = _RedactingFilter(secrets)
    names = [name for name in list(logging.root.manager.loggerDict)
             if name.split(".")[0].startswith(_HTTP_LOGGERS)]
    targets: List[Any] = [logging.getLogger(name) for name in names]
    targets += [handler for handler in logging.root.handlers]
    for target in targets:
        target.addFilter(log_filter)
    try:
        yield
    finally:
        for target in targets:
            target.removeFilter(log_filter)


def normalise_token(raw: Optional[str], source: str, repo_id: Optional[str] = None) -> Optional[str]:
    """``raw`` without surrounding whitespace (``tok\\r``, ``tok\\n`` work); None when nothing is left.

    A token that still contains whitespace, a control or a non-ASCII character (a line break in
    the middle, a tab) is refused with a ``HubUploadError`` that quotes no part of it.
    ``source`` names where it came from (``--token``, ``HF_TOKEN`` …) for the message.
    """
    if raw is None:
        return None
    token = raw.strip()
    if not token:
        return None
    bad = _NOT_TOKEN_CHAR.search(token)
    if bad is not None:
        char = bad.group()
        kind = ("a line break" if char in "\r\n\x0b\x0c\x85\u2028\u2029" else
                "a tab" if char == "\t" else
                "a control character" if ord(char) < 0x20 or 0x7f <= ord(char) < 0xa0 else
                "a space" if char.isspace() else
                "a non-ASCII character")
        where = f" for {repo_id}" if repo_id else ""
        raise HubUploadError(
            f"the Hugging Face token{where} from {source} contains {kind} (character {bad.start() + 1} of "
            f"{len(token)}), which a Hub token cannot contain; copy the token again (one line, no spaces)",
            repo_id=repo_id,
        )
    return token


def _environment_token() -> Optional[Tuple[str, str]]:
    """(variable name, raw value) of the token variable huggingface_hub reads, when set."""
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        value = os.environ.get(name)
        if value:
            return name, value
    return None


def resolve_with_source(token: Optional[str], repo_id: str) -> Tuple[str, str, List[str]]:
    """(token, where it came from, its raw spellings for redaction)."""
    from huggingface_hub import get_token

    if token is not None:
        normalised = normalise_token(token, "--token", repo_id)
        if normalised:
            return normalised, "--token", [token]
    resolved = get_token()
    environment = _environment_token()
    raws = [resolved] if resolved else []
    source = "the login cache"
    # huggingface_hub drops line breaks anywhere in HF_TOKEN: check the value as it was set
    if (resolved and environment is not None
            and environment[1].replace("\r", "").replace("\n", "").strip() == resolved):
        source, raw = environment
        raws.append(raw)
        resolved = normalise_token(raw, source, repo_id)
    else:
        resolved = normalise_token(resolved, source, repo_id)
    if not resolved:
        raise HubUploadError(
            f"no Hugging Face token to upload to {repo_id}: set HF_TOKEN, run `hf auth login` "
            "or pass --token",
            repo_id=repo_id,
        )
    return resolved, source, raws


def resolve_token(token: Optional[str], repo_id: str) -> str:
    """``token``, else HF_TOKEN, else the login cache, normalised (``normalise_token``); an
    error naming ``repo_id`` when there is none."""
    return resolve_with_source(token, repo_id)[0]
