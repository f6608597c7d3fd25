"""`python -m dynad ...` and `accelerate launch -m dynad run ...`: the same command line as `dynad`."""

import sys

from dynad.cli import main

sys.exit(main())
