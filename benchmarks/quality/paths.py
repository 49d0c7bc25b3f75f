"""Where the benchmark keeps its cache (outside git) and its committed results."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO_ROOT / "benchmarks" / ".cache"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"

FINETUNE_DIR = CACHE_DIR / "finetunes"          # <task>/encoder (BertModel), <task>/head.safetensors
PRETRAINED_ENCODER_DIR = CACHE_DIR / "pretrained_encoder"
MERGES_DIR = CACHE_DIR / "merges"               # one folder per merge (YAML + output)
