"""The one rule for telling a Hugging Face Hub model id from a local path.

A model reference is a Hub id when it is spelled as one (``NAME`` or ``ORG/NAME``: letters,
digits, ``_.-``), does not start like a path (``.``, ``/``, ``~``), does not exist locally, and is
not a path into a local folder (``family/ft_9`` with ``family/`` present is a missing local
model, not a repository).  Nothing here asks the network.
"""

from __future__ import annotations

import os
import re

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def is_hub_id(path: str) -> bool:
    """Whether the model reference ``path`` names a Hub repository (see the module docstring)."""
    if not path or not HUB_ID.match(path) or path.startswith((".", "/", "~")):
        return False
    if os.path.exists(path):
        return False
    return not ("/" in path and os.path.isdir(path.split("/", 1)[0]))


__all__ = ["HUB_ID", "is_hub_id"]
