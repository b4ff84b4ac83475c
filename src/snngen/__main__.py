"""``python -m snngen`` runs the command line."""

import sys

from snngen.cli import main

sys.exit(main())
