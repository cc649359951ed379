"""`python -m dalip.cli ...` (and `torchrun ... -m dalip.cli train ...`)."""

import sys

from dalip.cli.main import main

sys.exit(main())
