"""Moved to ``benchmarks.text_tasks.tasks`` (the text tasks both tracks use); this name stays for
``examples/minilm_demo.py``."""

from benchmarks.text_tasks.tasks import *  # noqa: F401,F403
