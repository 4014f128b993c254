"""`python -m subnets.masks ...` runs the mask inspection CLI."""

import sys

from .cli import main

sys.exit(main())
