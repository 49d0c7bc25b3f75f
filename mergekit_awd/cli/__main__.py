"""``python -m mergekit_awd.cli``: the ``mergekit-awd`` command."""

import sys

from mergekit_awd.cli import main

sys.exit(main())
