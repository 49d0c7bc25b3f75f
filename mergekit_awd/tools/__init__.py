"""Tools beside the merge: ``inspect`` (figures without merging), ``compress`` (TSV-C adapters),
``tune`` (parameters chosen on the user's data, scored by ``lm_scoring``).  Their figures and tables
are drawn by ``presentation``."""

from mergekit_awd.tools.compress import AdapterReport, CompressReport, compress_family
from mergekit_awd.tools.inspect import InspectReport, inspect_merge
from mergekit_awd.tools.tune import GridAxis, parse_grid, tune_merge
from mergekit_awd.tools.tune_data import TuningData, read_tuning_data, score_model
from mergekit_awd.tools.tune_result import TuneResult

__all__ = ["inspect_merge", "InspectReport", "compress_family", "CompressReport", "AdapterReport",
           "tune_merge", "TuneResult", "GridAxis", "parse_grid", "read_tuning_data", "TuningData", "score_model"]
