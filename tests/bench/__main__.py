"""`python -m tests.bench [options]` (what `make bench` runs); `--help` lists the options."""

import sys

from tests.bench.run import main

sys.exit(main())
