"""``python -m l2rebound.cli``: the command line."""

import sys

from l2rebound.cli import main

sys.exit(main())
