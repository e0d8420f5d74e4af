import sys

from training.evaluation.cli import main

sys.exit(main())
