"""``python -m fusion ...``: the command line (see :mod:`fusion.cli`)."""

import sys

from .cli import main

sys.exit(main())
