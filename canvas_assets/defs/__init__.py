"""Dagster objects only: resources, partitions, assets and checks, jobs, sensors, schedules.

Each is built from ``Settings`` by a factory; ``canvas_assets.definitions`` assembles them.
"""
