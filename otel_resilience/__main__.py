"""``python -m otel_resilience``: the command line."""

import sys

from ._cli import main

sys.exit(main())
