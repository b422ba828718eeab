"""``python -m agent`` runs the sgw-reach command line."""

import sys

from agent.cli import main

sys.exit(main())
