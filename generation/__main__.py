"""``python -m generation PROMPT [options]``; see ``generation.cli``."""

import sys

from generation.cli import main

sys.exit(main())
