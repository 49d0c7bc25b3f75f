"""Where the benchmark keeps its cache (outside git) and its committed results."""

from __future__ import annotations

from benchmarks.common import CACHE as CACHE_DIR
from benchmarks.common import RESULTS as RESULTS_DIR  # noqa: F401  (re-exported)

FINETUNE_DIR = CACHE_DIR / "finetunes"          # <task>/encoder (BertModel), <task>/head.safetensors
PRETRAINED_ENCODER_DIR = CACHE_DIR / "pretrained_encoder"
MERGES_DIR = CACHE_DIR / "merges"               # one folder per merge (YAML + output)
