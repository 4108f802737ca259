"""The ``canvas-assets`` command: the local dev stack, the sandbox, and Live Events replay."""
