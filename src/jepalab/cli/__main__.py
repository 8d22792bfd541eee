"""``python -m jepalab.cli ...``: the ``jepalab`` command."""

import sys

from jepalab.cli.dispatch import main

sys.exit(main())
