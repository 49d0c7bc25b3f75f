"""What a method's model card shows after its parameter table, named as data.

A method lists its parts in ``PackageMergeMethod.card_parts``; ``presentation.card_sections`` draws
each from the merge report and the method's own data (``report_section``, ``card_title`` and
``card_intro``, a text whose ``{fields}`` the part fills in).  The adapter renders nothing.
"""

from __future__ import annotations

from enum import Enum


class CardPart(str, Enum):
    """One part of the card's method section (what ``presentation.card_sections`` draws for it)."""

    # δ's solves: pairwise |cos| of the task vectors before and after (a table and the heatmap)
    DISENTANGLEMENT = "disentanglement"
    # the same, only when the report recorded δ solves (disentanglement is optional)
    RECORDED_DISENTANGLEMENT = "recorded disentanglement"
    # the mean of each figure of ``report_section`` under ``card_title``, after ``card_intro``
    SECTION_MEANS = "section means"
    # the same; ``card_intro`` when the section records the STI: {count} matrices, {total} and {mean} STI
    STI_MEANS = "sti means"
    # the same; ``card_intro`` filled with the solve branches: {heterogeneous} of {matrices}, {fallbacks}
    BRANCH_MEANS = "branch means"


__all__ = ["CardPart"]
