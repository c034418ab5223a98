"""``python -m attnflow.cli`` (e.g. under ``torchrun``): the ``attnflow`` command."""

import sys

from . import main

sys.exit(main())
