"""The change driver: one random, Canvas-plausible change per step, published as Live Events.

Delivery imitates a standard SQS queue: optional duplicates, reordering and drops. The changes
themselves are in ``courses``, ``sections``, ``enrollments`` and ``users``.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ..institution import Institution
from . import courses, enrollments, sections, users
from .context import ChangeContext
from .events import send_envelopes

# Each change, and how often it is picked relative to the others.
MUTATIONS: dict[str, tuple[Callable[[ChangeContext], list[dict]], int]] = {
    "create_course": (courses.create_course, 4),
    "update_course": (courses.update_course, 10),
    "delete_course": (courses.delete_course, 2),
    "create_section": (sections.create_section, 4),
    "update_section": (sections.update_section, 6),
    "create_enrollment": (enrollments.create_enrollment, 25),
    "update_enrollment": (enrollments.update_enrollment, 20),
    "grade_change": (enrollments.grade_change, 20),
    "update_user": (users.update_user, 9),
}


class ChangeDriver:
    """Applies one random change per step and publishes its live events."""

    def __init__(
        self,
        institution: Institution,
        sqs_client: Any,
        queue_url: str | None,
        seed: int = 0,
        duplicate_rate: float = 0.0,
        reorder_rate: float = 0.0,
        drop_rate: float = 0.0,
        follow_wall_clock: bool = False,
    ) -> None:
        self.institution = institution
        # With a live pipeline, event times must not lag behind the sync's own clock, or every
        # event would look older than the rows a backfill just wrote.
        self.follow_wall_clock = follow_wall_clock
        self.sqs_client, self.queue_url = sqs_client, queue_url
        self.rng = random.Random(seed)
        self.context = ChangeContext(institution, self.rng)
        self.duplicate_rate, self.reorder_rate, self.drop_rate = (
            duplicate_rate,
            reorder_rate,
            drop_rate,
        )
        self.sent: deque[dict] = deque(maxlen=10_000)  # what actually went out, in order
        self._held: list[dict] = []

    def step(self) -> list[dict]:
        with self.institution.lock:
            if self.follow_wall_clock:
                now = datetime.now(UTC).replace(microsecond=0)
                self.institution.clock = max(self.institution.clock, now)
            names = list(MUTATIONS)
            weights = [MUTATIONS[n][1] for n in names]
            envelopes: list[dict] = []
            for _ in range(10):  # a mutation may find nothing eligible; try another kind
                kind = self.rng.choices(names, weights)[0]
                envelopes = MUTATIONS[kind][0](self.context)
                if envelopes:
                    break
        self._deliver(envelopes)
        return envelopes

    def run(self, n: int) -> list[dict]:
        out: list[dict] = []
        for _ in range(n):
            out.extend(self.step())
        return out

    def flush(self) -> None:
        held, self._held = self._held, []
        self._send(held)

    def _deliver(self, envelopes: list[dict]) -> None:
        out: list[dict] = []
        for env in envelopes:
            if self.rng.random() < self.drop_rate:
                continue
            if self.rng.random() < self.reorder_rate:
                self._held.append(env)  # goes out after the next envelope
                continue
            out.append(env)
            out.extend(self._held)
            self._held.clear()
            if self.rng.random() < self.duplicate_rate:
                out.append(env)
        self._send(out)

    def _send(self, envelopes: list[dict]) -> None:
        if not envelopes:
            return
        self.sent.extend(envelopes)
        if self.sqs_client is not None:
            send_envelopes(self.sqs_client, self.queue_url, envelopes)
