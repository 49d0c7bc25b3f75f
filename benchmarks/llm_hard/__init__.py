"""The hard causal-LM track (issue #27): eight tasks on SmolLM2-135M-Instruct, strong fine-tunes."""
