"""`python -m bench [options]` (what `make bench` runs); `--help` lists the options."""

import sys

from bench.run import main

sys.exit(main())
