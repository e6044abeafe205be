"""``python -m ingest.cli`` is ``runstream``."""

import sys

from ingest.cli.main import main

sys.exit(main())
