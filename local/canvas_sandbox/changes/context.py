"""What every mutation shares: the institution, the random source, the acting admin, the id form
of the current event group, and the objects a change may pick."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta

from ..institution import Institution, global_id
from .events import TIME_FORMAT_WEIGHTS, TIME_FORMATS, envelope

EventSpec = tuple[str, dict, "tuple[str, int] | None"]


class ChangeContext:
    def __init__(self, institution: Institution, rng: random.Random) -> None:
        self.institution = institution
        self.rng = rng
        self.actor = min(institution.users)  # the admin generated first
        self.use_global = True

    def id(self, local: int | None) -> str | None:
        if local is None:
            return None
        return str(global_id(local, self.institution.shard_id) if self.use_global else local)

    def begin(self) -> str:
        """Start a mutation: pick id form for this event group and stamp the clock."""
        self.use_global = self.rng.random() >= 0.1
        return self.institution.stamp()

    def events(
        self, specs: list[tuple[str, dict, tuple[str, int] | None]], system: bool = False
    ) -> list[dict]:
        """Envelopes sharing one request id, like the events of one Canvas request."""
        inst, rng = self.institution, self.rng
        request_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        moment = inst.clock + timedelta(milliseconds=rng.randint(0, 999))
        time_format = rng.choices(TIME_FORMATS, TIME_FORMAT_WEIGHTS)[0]
        return [
            envelope(
                inst,
                name,
                body,
                event_time=moment,
                user_id=self.actor,
                context=context,
                time_format=time_format,
                system=system,
                request_id=request_id,
            )
            for name, body, context in specs
        ]

    def live_courses(self) -> list[dict]:
        terms = self.institution.real_term_ids()
        return [
            c
            for c in self.institution.courses.values()
            if c["enrollment_term_id"] in terms and c["workflow_state"] != "deleted"
        ]

    def live_sections(self, course: dict) -> list[dict]:
        inst = self.institution
        return [
            inst.sections[s]
            for s in inst.sections_by_course.get(course["id"], [])
            if inst.sections[s]["workflow_state"] != "deleted"
        ]

    def live_enrollments(self, types: set[str] | None = None) -> list[dict]:
        inst = self.institution
        out = []
        for c in self.live_courses():
            for eid in inst.enrollments_by_course.get(c["id"], []):
                e = inst.enrollments[eid]
                if (
                    e["enrollment_state"] != "deleted"
                    and (types is None or e["type"] in types)
                    and inst.sections[e["course_section_id"]]["workflow_state"] != "deleted"
                    and inst.users[e["user_id"]]["workflow_state"] != "deleted"
                ):
                    out.append(e)
        return out

    def live_users(self) -> list[dict]:
        return [u for u in self.institution.users.values() if u["workflow_state"] != "deleted"]
