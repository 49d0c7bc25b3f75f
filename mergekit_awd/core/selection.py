"""Which tensors AWD disentangles; every other tensor is merged by plain task arithmetic.

The paper applies AWD to the 2-D weights of the linear layers inside transformer blocks
(and reports that this loses nothing).  ``select`` widens or narrows that choice, per tensor
if wanted, through mergekit's usual parameter filters:

* ``block_linear`` (default): 2-D, non-vocabulary tensors whose name has a numbered block
  (``.layers.3.``, ``.layer.3.``, ``.h.3.``, ``.blocks.3.``).
* ``matrices``: every 2-D tensor, embeddings and heads included.
* ``all``: every floating-point tensor (biases and norms too).
* ``none``: nothing; the method is plain task arithmetic.
"""

from __future__ import annotations

import re
from typing import Literal, Optional, Tuple, get_args

Select = Literal["block_linear", "matrices", "all", "none"]
SELECT_CHOICES: Tuple[str, ...] = get_args(Select)
DEFAULT_SELECT = "block_linear"

_BLOCK_PATTERN = re.compile(r"(?:^|\.)(?:layers?|h|blocks?)\.(\d+)\.")


def block_number(name: str) -> Optional[str]:
    """The number of the transformer block a tensor belongs to (``"7"``), or None."""
    match = _BLOCK_PATTERN.search(name or "")
    return match.group(1) if match else None


def block_text(name: str) -> Optional[str]:
    """The part of a tensor's name that names its block (``".layers.7."``, ``"h.3."`` at the start), or None:
    a substring of the name of every tensor of that block and of no other block's."""
    match = _BLOCK_PATTERN.search(name or "")
    return match.group(0) if match else None


def in_transformer_block(name: str) -> bool:
    """True when a tensor name contains a numbered block (``model.layers.7.mlp...``)."""
    return block_number(name) is not None


def may_be_disentangled(name: str, select: str, vocabulary_axis: Optional[int] = None) -> bool:
    """Selection by name alone (used at planning time, before shapes are known)."""
    if select == "none":
        return False
    if select == "block_linear":
        return vocabulary_axis is None and in_transformer_block(name)
    return True


def is_disentangled(name: str, ndim: int, select: str, vocabulary_axis: Optional[int] = None) -> bool:
    """Selection by name and rank: whether AWD applies to this tensor."""
    if not may_be_disentangled(name, select, vocabulary_axis):
        return False
    if select == "all":
        return ndim >= 1
    return ndim == 2


def is_task_matrix(name: str, ndim: int, select: str, vocabulary_axis: Optional[int] = None) -> bool:
    """Whether a per-matrix method (TSV-M, WUDI, Iso) applies: a 2-D tensor chosen by ``select``
    (``all`` adds no 1-D tensors there: a vector has no singular structure, so it is averaged)."""
    return ndim == 2 and is_disentangled(name, ndim, select, vocabulary_axis)
