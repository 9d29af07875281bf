"""``python -m mechgrok.cli``: the same as ``mechgrok``."""

import os
import sys

from mechgrok.cli import main

os.environ.setdefault("PYTHONUNBUFFERED", "1")
sys.exit(main())
