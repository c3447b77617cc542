"""``python -m e2e``: see :mod:`e2e.run`."""

import sys

from e2e.run import main

sys.exit(main())
