"""Speed and memory benchmarks, and the GPU merge check: each ``python -m benchmarks.speed.<name>``
(benchmarks/INDEX.md lists them with their results files and runtimes).  ``measure`` builds the
synthetic inputs and measures one merge in a fresh process (``_measured_child`` records its peak RSS)."""
