"""mergekit-awd: AWD (arXiv 2411.18729) and TSV (arXiv 2412.00081) merge methods for mergekit.

Importing the package registers its merge methods with mergekit (idempotently).  The library:
``run_merge`` (what ``mergekit-awd CONFIG OUT`` runs), ``inspect_merge``, ``compress_family``,
``tune_merge``, ``upload_output``; each returns a typed result.  Every error raised on purpose is a
``MergekitAwdError`` (``mergekit_awd.errors``).  The numerical core is ``mergekit_awd.core``.
"""

from mergekit_awd.mergekit_adapter.registration import register_methods

register_methods()

from mergekit_awd.core import AWDParameters, CompressSettings, SolverSettings, TSVParameters, TSVSettings  # noqa: E402
from mergekit_awd.errors import MergekitAwdError  # noqa: E402
from mergekit_awd.hub import UploadResult, upload_output  # noqa: E402
from mergekit_awd.pipeline import MergeOutcome, run_merge  # noqa: E402
from mergekit_awd.tools import (  # noqa: E402
    CompressReport, InspectReport, TuneResult, compress_family, inspect_merge, tune_merge,
)

__all__ = [
    "run_merge", "MergeOutcome",
    "inspect_merge", "InspectReport",
    "compress_family", "CompressReport",
    "tune_merge", "TuneResult",
    "upload_output", "UploadResult",
    "AWDParameters", "TSVParameters", "SolverSettings", "TSVSettings", "CompressSettings",
    "MergekitAwdError",
    "register_methods",
]
__version__ = "0.1.0"
