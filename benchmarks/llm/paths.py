"""Where the LLM track keeps its cache (outside git) and its committed results."""

from __future__ import annotations

from benchmarks.common import CACHE, RESULTS

LLM_CACHE = CACHE / "llm"
BASE_DIR = LLM_CACHE / "base"              # SmolLM2-135M-Instruct dequantised, plain HF folder (float32)
FINETUNE_DIR = LLM_CACHE / "finetunes"     # <task>/ : full fine-tunes, same layout as the base
MERGES_DIR = LLM_CACHE / "merges"          # one folder per merge (YAML + output)
RESULTS_JSON = RESULTS / "llm_quality.json"
RESULTS_MD = RESULTS / "llm_quality.md"
