"""`python -m flaxseq`: the same as the `flaxseq` command."""

import sys

from flaxseq.cli import entry

sys.exit(entry())
