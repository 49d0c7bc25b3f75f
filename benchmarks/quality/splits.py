"""Moved to ``benchmarks.text_tasks.splits`` (the text tasks both tracks use); this name stays for
``examples/minilm_demo.py``."""

from benchmarks.text_tasks.splits import *  # noqa: F401,F403
