"""``python -m canvas_assets``: the ``canvas-assets`` command."""

import sys

from canvas_assets.tools.cli import main

sys.exit(main())
