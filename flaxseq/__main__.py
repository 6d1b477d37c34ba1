"""`python -m flaxseq`: the same as the `flaxseq` command."""

import sys

from flaxseq.cli import main

sys.exit(main())
