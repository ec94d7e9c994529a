"""`python -m tfddn.cli ...` is `tfddn ...`."""

import sys

from tfddn.cli import main

sys.exit(main())
