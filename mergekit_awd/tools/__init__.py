"""Tools beside the merge: ``inspect`` (figures without merging), ``compress`` (TSV-C adapters),
``heatmap`` (the PNGs both draw)."""

from mergekit_awd.tools.compress import AdapterReport, CompressReport, compress_family
from mergekit_awd.tools.inspect import InspectReport, inspect_merge

__all__ = ["inspect_merge", "InspectReport", "compress_family", "CompressReport", "AdapterReport"]
