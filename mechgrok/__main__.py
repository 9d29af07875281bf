import sys

from mechgrok.cli import main

sys.exit(main())
