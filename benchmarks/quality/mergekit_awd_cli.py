"""``python -m benchmarks.quality.mergekit_awd_cli CONFIG OUT [options]``: the ``mergekit-awd`` CLI
(``mergekit_awd.cli.main``, unchanged) with ``mergekit_compat`` applied first.

The benchmark calls the ``mergekit-awd`` executable directly whenever ``mergekit_compat`` reports
that no fix is needed; this entry point exists only for the BERT planner crash it documents.
"""

from __future__ import annotations

import sys

from benchmarks.quality import mergekit_compat

if __name__ == "__main__":
    mergekit_compat.apply()
    from mergekit_awd.cli import main

    sys.exit(main())
