"""`python -m genlab` runs the CLI."""

import sys

from genlab.cli import main

sys.exit(main())
