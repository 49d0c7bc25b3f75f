"""The run pipeline: config → validation → input paths → staging → mergekit's run → report, card, marker.

* ``config``: load YAML (bounded), refuse unknown and duplicate keys.
* ``validation``: parameters, inputs, model files and shapes, before anything heavy.
* ``model_files``: the one reader of model-folder metadata (config, weights, shards, LoRA adapters).
* ``input_paths``: OUT never overlaps an input.
* ``staging``: staged, locked writes, checked again at the swap.
* ``runner``: ``run_merge``, mergekit's own pipeline with our planner, report and card.
* ``output_layout``: the completion marker (file digests) and the check ``upload`` runs.
"""

from mergekit_awd.pipeline.runner import MergeOutcome, run_merge

__all__ = ["run_merge", "MergeOutcome"]
