"""``python -m binsr`` runs the command line."""

import sys

from binsr.cli import main

sys.exit(main())
