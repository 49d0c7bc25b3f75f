"""Moved to ``benchmarks.text_tasks.setup_data`` (the text tasks both tracks use); this name stays for
``examples/minilm_demo.py``."""

from benchmarks.text_tasks.setup_data import *  # noqa: F401,F403
