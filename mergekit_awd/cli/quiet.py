"""Noise that mergekit's calls into transformers print on every run, filtered in our entry points
only (a user's own code keeps every warning): transformers' "`torch_dtype` is deprecated" (mergekit
still passes ``torch_dtype``) and "`is_gradient_checkpointing` is deprecated" (the LoRA path)."""

from __future__ import annotations

import logging
import warnings

NOISE = ("`torch_dtype` is deprecated", "`is_gradient_checkpointing` is deprecated")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in NOISE)


def silence_library_noise() -> None:
    """Install the filters (idempotent)."""
    for text in NOISE:
        warnings.filterwarnings("ignore", message=f".*{text.replace('`', '.')}.*")
    for name in ("transformers", "transformers.modeling_utils", "transformers.configuration_utils"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
