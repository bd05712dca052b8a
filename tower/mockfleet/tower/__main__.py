"""``python -m mockfleet.tower``: what a re-exec after an upgrade runs."""

import sys

from mockfleet.tower.cli import main

sys.exit(main())
