"""``python -m e2e.distributed``: see :mod:`e2e.distributed.run`."""

import sys

from e2e.distributed.run import main

sys.exit(main())
