"""Moved to ``benchmarks.harness.merging`` (the CLI merges of both tracks); this name stays for
``examples/minilm_demo.py``."""

from benchmarks.harness.merging import *  # noqa: F401,F403
