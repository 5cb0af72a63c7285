"""``python -m runcycles``: the ``runcycles`` command."""

import sys

from .cli import main

sys.exit(main())
