"""The ``canvas-assets`` command: Live Events replay, and the subcommands the local tools add
(``dev``, ``sandbox``) when they are installed."""
