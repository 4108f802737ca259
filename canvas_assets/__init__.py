"""canvas-assets: a Dagster project that keeps a PostgreSQL copy of a Canvas LMS institution.

The code location is ``canvas_assets.definitions`` (``[tool.dg.project]`` in pyproject.toml).
"""
