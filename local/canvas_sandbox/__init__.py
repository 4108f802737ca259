"""The Canvas sandbox: a faithful, local stand-in for a Canvas LMS instance.

* ``generate_institution(size, seed, scale, account_users)`` builds a deterministic institution
  in memory: a sub-account tree, Canvas's "Default Term" plus real semesters
  (2025FA/2026SP/2026FA; "large" has 2026SP/2026FA, "university" 2026SP), courses in every
  state, sections (some cross-listed), users with unicode names, and enrollments of every role
  and state. Per real semester, ``SIZES`` gives roughly small = 12 courses / 18 sections / 250
  enrollments / 120 users, medium = 150 / 240 / 4,000 / 1,500, large = 1,050 / 1,650 / 31,000 /
  10,800 and university = 4,800 / 7,600 / 144,000 / 39,000 in an account of 119,000 users.
  ``scale`` multiplies a size's courses and people; ``account_users`` sets the account's size.
* ``SandboxServer`` serves Canvas's REST API over HTTP with Canvas's ``Link`` paging, JSON
  errors, global-id paths and a per-token leaky-bucket throttle (hwm 600, max 800, 10 units/s
  leak, 50 charged up front per request being served; ``throttle.py``). A request costs its
  CPU + DB seconds (``throttle.ITEM_COSTS``: more for larger pages and heavier objects);
  injected latency is free, as in Canvas. For measurements it can hold each request for a
  latency plus its cost, add a network round trip outside the bucket, keep connections open
  and cache rendered pages (``canvas-assets sandbox --help``). ``Faults`` injects latency, 5xx
  errors, timeouts and throttle storms.
* ``model.term_floor`` is the least time any client can read a term in from such a sandbox.
* ``ChangeDriver`` mutates the institution and publishes the matching Live Events (Canvas
  envelope format) to SQS, optionally duplicated, reordered or dropped; ``rename_course``
  makes one known change and returns its event.
* ``DeveloperKey`` gives a ``SandboxServer`` Canvas's OAuth2 endpoints (``oauth.py``): the
  authorize redirect, the authorization-code and refresh grants, expiring tokens replaced by
  each refresh, and a scoped-key mode (routes outside its scopes refused, includes dropped).
"""

from .changes import ChangeDriver, envelope, rename_course, send_envelopes
from .faults import Faults
from .institution import SHARD_ID, SIZES, Institution, generate_institution, global_id
from .oauth import DeveloperKey
from .server import SandboxServer

__all__ = [
    "SHARD_ID",
    "SIZES",
    "ChangeDriver",
    "DeveloperKey",
    "Faults",
    "Institution",
    "SandboxServer",
    "envelope",
    "generate_institution",
    "global_id",
    "rename_course",
    "send_envelopes",
]
