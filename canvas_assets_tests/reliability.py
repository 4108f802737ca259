"""The reliability suite's knobs (a pytest plugin loaded by conftest.py).

``CANVAS_RELIABILITY_PROFILE`` picks how hard the fuzz and fault tests push:

* ``ci`` (default): hypothesis with a fixed seed (``derandomize``), enough examples for at least
  1,000 generated messages and mixed batches, and the smallest number of injections that still
  runs every scenario with real faults. Fits the CI budget.
* ``heavy``: ten times the examples with a fresh random seed each run (hypothesis prints the
  seed of any failure), at least 50 SIGKILLs, longer event streams.

Tests report their figures through the ``figures`` fixture; with
``CANVAS_RELIABILITY_FIGURES=<file.json>`` they are written there at the end of the session,
which is how ``bench/reliability.py`` builds RELIABILITY.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

PROFILE_ENV = "CANVAS_RELIABILITY_PROFILE"
FIGURES_ENV = "CANVAS_RELIABILITY_FIGURES"
_SLOW_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]

# database=None: nothing is written into the shared checkout (.hypothesis/).
settings.register_profile(
    "ci", derandomize=True, max_examples=200, deadline=None, database=None,
    suppress_health_check=_SLOW_OK, print_blob=True,
)  # fmt: skip
settings.register_profile(
    "heavy", derandomize=False, max_examples=2000, deadline=None, database=None,
    suppress_health_check=_SLOW_OK, print_blob=True,
)  # fmt: skip
PROFILE = os.environ.get(PROFILE_ENV, "ci")
if PROFILE not in ("ci", "heavy"):
    raise pytest.UsageError(f"{PROFILE_ENV} must be 'ci' or 'heavy', got {PROFILE!r}")
settings.load_profile(PROFILE)


def scale(ci: int, heavy: int) -> int:
    """How many of something (kills, events) the current profile asks for."""
    return heavy if PROFILE == "heavy" else ci


_FIGURES: dict[str, dict] = {}


@pytest.fixture
def figures() -> Callable[..., None]:
    """``figures(scenario, **values)``: what a test injected and what came out, for the report."""

    def record(scenario: str, **values: object) -> None:
        _FIGURES.setdefault(scenario, {}).update(values, profile=PROFILE)

    return record


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get(FIGURES_ENV)
    if not target or not _FIGURES:
        return
    path = Path(target)
    known = json.loads(path.read_text()) if path.exists() else {}
    known.update(_FIGURES)
    path.write_text(json.dumps(known, indent=2, sort_keys=True, default=str))
