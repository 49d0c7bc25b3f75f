"""mergekit's model card, made safe to write after a merge finished.

mergekit's card generator (``mergekit.card.is_hf``) asks the Hub whether a relative path with
one folder (``models/ft2``) is a repository, even when that folder exists locally.  Offline
(``HF_HUB_OFFLINE=1``) the call raises and mergekit loses the whole finished merge; online it
sends local folder names to the Hub.  Inside ``local_first_card`` mergekit uses our one rule
(``hub.ids.is_hub_id``: a path that exists locally is never a Hub id) and no network call is made; and if mergekit's card generator
fails anyway, a minimal card is written and the failure recorded, so the merge is never lost to
its card.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Tuple

from mergekit_awd.hub.ids import is_hub_id


def minimal_card(name: str, error: BaseException) -> str:
    return (
        "---\nlibrary_name: transformers\ntags:\n- mergekit\n- merge\n---\n"
        f"# {name}\n\nThis is a merge of pre-trained language models created using "
        "[mergekit](https://github.com/cg123/mergekit) and mergekit-awd.\n\n"
        f"(mergekit's card generator failed: {type(error).__name__}; see mergekit_config.yml for the merge.)\n"
    )


@contextmanager
def local_first_card() -> Iterator[List[Tuple[str, str]]]:
    """Patch mergekit's card lookups while the block runs; yields the list of card failures."""
    import mergekit.card as card
    import mergekit.merge as merge

    failures: List[Tuple[str, str]] = []
    original_is_hf, original_generate = card.is_hf, merge.generate_card

    def generate_card(*args, **kwargs) -> str:
        try:
            return original_generate(*args, **kwargs)
        except Exception as error:  # the merge is finished: never lose it to its card
            failures.append(("mergekit's model card", f"{type(error).__name__}: {error}"))
            return minimal_card(kwargs.get("name", "merged model"), error)

    card.is_hf, merge.generate_card = is_hub_id, generate_card
    try:
        yield failures
    finally:
        card.is_hf, merge.generate_card = original_is_hf, original_generate
