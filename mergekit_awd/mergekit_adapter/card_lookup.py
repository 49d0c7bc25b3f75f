"""mergekit's model card, made safe to write after a merge finished: the package's one patch of mergekit.

mergekit's card generator (``mergekit.card.is_hf``) asks the Hub whether a relative path with one
folder (``models/ft2``) is a repository, even when that folder exists locally.  Offline
(``HF_HUB_OFFLINE=1``) the call raises and mergekit loses the whole finished merge; online it sends
local folder names to the Hub.  ``patch_card_lookup`` replaces ``mergekit.card.is_hf`` with our one
rule (``hub_ids.is_hub_id``: a path that exists locally is never a Hub id), once per process, when
the methods are registered (``registration.register_methods``): the replacement is a pure function
of the path, so it holds no state two merges could share, and it only ever answers "local" where
mergekit would have asked the network about a folder that exists.  If mergekit's card generator
fails anyway, the runner writes ``minimal_card`` and records the failure (``pipeline.mergekit_run``),
so the merge is never lost to its card.
"""

from __future__ import annotations

import threading

from mergekit_awd.hub_ids import is_hub_id

_LOCK = threading.Lock()


def minimal_card(name: str, error: BaseException) -> str:
    return (
        "---\nlibrary_name: transformers\ntags:\n- mergekit\n- merge\n---\n"
        f"# {name}\n\nThis is a merge of pre-trained language models created using "
        "[mergekit](https://github.com/cg123/mergekit) and mergekit-awd.\n\n"
        f"(mergekit's card generator failed: {type(error).__name__}; see mergekit_config.yml for the merge.)\n"
    )


def patch_card_lookup() -> None:
    """``mergekit.card.is_hf`` ← ``is_hub_id``; idempotent."""
    import mergekit.card as card

    with _LOCK:
        if card.is_hf is not is_hub_id:
            card.is_hf = is_hub_id
