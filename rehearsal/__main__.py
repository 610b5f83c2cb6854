"""`python -m rehearsal` is the `rehearsal` command."""

import sys

from rehearsal.cli import main

sys.exit(main())
