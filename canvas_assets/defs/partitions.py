"""The ``semester`` partitions: one per Canvas enrollment term that Target Semesters admits.

A term's key is its SIS term id, or ``term-<canvas id>`` for a term without one (such as Canvas's
default term). Keys are added by the auto-import sensor (or by hand in the UI).
"""

import dagster as dg

SEMESTER_PARTITIONS_NAME = "semester"

semester_partitions = dg.DynamicPartitionsDefinition(name=SEMESTER_PARTITIONS_NAME)

# Runs and ops that call Canvas share this pool so parallel semesters do not throttle each other.
CANVAS_API_POOL = "canvas_api"
