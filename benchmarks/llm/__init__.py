"""The causal-LM track: SmolLM2-135M-Instruct fine-tunes merged through ``mergekit-awd`` (issue #12)."""
