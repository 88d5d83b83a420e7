"""`python -m salt` is the `salt` command."""

import sys

from salt.cli import main

sys.exit(main())
