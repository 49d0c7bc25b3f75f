"""One-off experiments behind design decisions; see README.md here.  Run each from the repository root
as ``python -m benchmarks.experiments.<name>``."""
