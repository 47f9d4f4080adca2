"""``python -m kerasbd`` runs the command line."""

import sys

from kerasbd.cli import main

sys.exit(main())
