"""``python -m sesender``: the same as the ``sesender`` console script."""

import sys

from sesender.cli import main

sys.exit(main())
