"""`python -m factorconv` (and `torchrun -m factorconv`) runs the command line."""

import sys

from .cli import main

sys.exit(main())
