"""``python -m canvas_assets``: the ``canvas-assets`` command."""

import sys

from canvas_assets.commands.cli import main

sys.exit(main())
