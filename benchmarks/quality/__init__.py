"""Offline merge-quality benchmark: six MiniLM fine-tunes merged by mergekit methods and AWD.

Run ``python -m benchmarks.quality.run`` from the repository root.
"""
