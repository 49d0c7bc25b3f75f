"""Reports made readable: the model card (``card``, its figures ``card_sections``), the heatmap PNGs
(``heatmap``) and tune's summaries (``tune_summary``).

A layer above the method adapter and below the pipeline and tools that call it: it renders the data
they hand it (a merge report, a method's ``card_parts``, a tune result's JSON) and imports neither.
"""

from mergekit_awd.presentation.card import append_card_note, model_labels, write_model_card
from mergekit_awd.presentation.card_sections import method_lines
from mergekit_awd.presentation.heatmap import HeatmapPanel, save_heatmaps
from mergekit_awd.presentation.tune_summary import cache_line, score_figure, tune_table, tuning_note

__all__ = ["write_model_card", "append_card_note", "model_labels", "method_lines", "HeatmapPanel", "save_heatmaps",
           "tune_table", "tuning_note", "cache_line", "score_figure"]
