"""`python -m training.export ...` (see training/export/cli.py)."""

import sys

from training.export.cli import main

sys.exit(main())
