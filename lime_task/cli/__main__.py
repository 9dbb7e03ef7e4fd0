"""`python -m lime_task.cli`: the `limetask` command."""

import sys

from . import main

sys.exit(main())
