"""``python -m flight_server.cli``: the same as the ``omero-flight`` command."""

import sys

from flight_server.cli import main

sys.exit(main())
