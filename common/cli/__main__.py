"""``python -m common.cli``: the same as the ``zoo`` command."""

import sys

from common.cli import main

sys.exit(main())
