"""Tiny model families for tests, demos and benchmarks (``synthetic.build_family``)."""
