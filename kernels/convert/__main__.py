"""`python -m kernels.convert ...` = `tandem convert ...`."""

import sys

from kernels.convert.cli import main

raise SystemExit(main(sys.argv[1:]))
