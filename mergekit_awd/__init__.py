"""mergekit-awd: AWD (arXiv 2411.18729) merge method for mergekit.

Importing the package registers its merge methods with mergekit (idempotently).
"""

from mergekit_awd.mergekit_adapter.registration import register_methods

register_methods()

from mergekit_awd.pipeline.runner import MergeOutcome, run_merge

__all__ = ["run_merge", "MergeOutcome", "register_methods"]
__version__ = "0.1.0"
