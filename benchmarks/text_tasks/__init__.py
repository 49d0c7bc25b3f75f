"""The six labelled text tasks both quality tracks draw on: the offline data sources and their
installer (``setup_data``), the raw texts per class (``tasks``), the seeded balanced splits
(``splits``) and the per-process cache of them (``data``).  The MiniLM track (``benchmarks.quality``)
fine-tunes on all six, the causal-LM track (``benchmarks.llm``) on three of them (plus arithmetic)."""
