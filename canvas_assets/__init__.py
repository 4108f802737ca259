"""canvas-assets: a Dagster project that keeps a PostgreSQL copy of a Canvas LMS institution.

``dagster … -m canvas_assets`` finds the Definitions as ``canvas_assets.code_location`` (the
same object as ``canvas_assets.definitions.defs``). It is built on first access, so importing a
submodule (the sandbox, the CLI) stays cheap and never reads the environment.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "code_location":
        from canvas_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'canvas_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return [*globals(), "code_location"]
