"""The Canvas sandbox: a faithful, local stand-in for a Canvas LMS instance.

* ``generate_institution(size, seed)`` builds a deterministic institution in memory: a
  sub-account tree, Canvas's "Default Term" plus real semesters (2025FA/2026SP/2026FA; "large"
  has 2026SP/2026FA), courses in every state, sections (some cross-listed), users with unicode
  names, and enrollments of every role and state. Per real semester, ``SIZES`` gives roughly
  small = 12 courses / 18 sections / 250 enrollments / 120 users, medium = 150 / 240 / 4,000 /
  1,500 and large = 1,050 / 1,650 / 31,000 / 10,800.
* ``SandboxServer`` serves Canvas's REST API over HTTP with Canvas's ``Link`` paging, JSON
  errors, global-id paths and a per-token leaky-bucket throttle (hwm 600, max 800, 10 units/s
  leak, 50 charged up front per in-flight request). A request then costs
  ``0.02 + 0.0004 * items in the body``; injected latency is free, as in Canvas, which charges
  CPU and DB time. ``Faults`` injects latency, 5xx errors, timeouts and throttle storms.
* ``ChangeDriver`` mutates the institution and publishes the matching Live Events (Canvas
  envelope format) to SQS, optionally duplicated, reordered or dropped.
"""

from .changes import ChangeDriver, envelope, send_envelopes
from .faults import Faults
from .institution import SHARD_ID, SIZES, Institution, generate_institution, global_id
from .server import SandboxServer

__all__ = [
    "SHARD_ID",
    "SIZES",
    "ChangeDriver",
    "Faults",
    "Institution",
    "SandboxServer",
    "envelope",
    "generate_institution",
    "global_id",
    "send_envelopes",
]
