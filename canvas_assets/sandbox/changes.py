"""Random changes to the sandbox institution, published as Canvas Live Events on SQS.

Bodies follow Canvas's AsyncAPI schemas: ids are strings, mostly global
(``shard * 10**13 + local``) but ~10% of events use local ids, nil fields are dropped, and
``metadata.event_time`` mixes three timestamp formats. Delivery imitates a standard SQS queue:
optional duplicates, reordering and drops.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from collections import deque
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from .institution import (
    FIRST,
    LAST,
    ROLE_IDS,
    Institution,
    global_id,
    letter_grade,
    parse_iso,
)

log = logging.getLogger(__name__)
HOSTNAME = "sandbox.canvas.local"
TIME_FORMATS = ("iso_ms", "iso", "offset")
TIME_FORMAT_WEIGHTS = (70, 20, 10)
OFFSETS = (
    timezone(timedelta(hours=-7)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=1)),
)
MUTATION_WEIGHTS = {
    "create_course": 4,
    "update_course": 10,
    "delete_course": 2,
    "create_section": 4,
    "update_section": 6,
    "create_enrollment": 25,
    "update_enrollment": 20,
    "grade_change": 20,
    "update_user": 9,
}


def format_time(moment: datetime, time_format: str = "iso_ms") -> str:
    moment = moment.astimezone(UTC)
    if time_format == "iso_ms":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if time_format == "iso":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Ruby's Time#to_s in some other zone, e.g. "2026-09-01 05:00:00 -0700".
    offset = OFFSETS[moment.second % len(OFFSETS)]
    return moment.astimezone(offset).strftime("%Y-%m-%d %H:%M:%S %z")


def envelope(
    institution: Institution,
    event_name: str,
    body: dict,
    *,
    event_time: datetime,
    user_id: int | None = None,
    context: tuple[str, int] | None = None,
    time_format: str = "iso_ms",
    system: bool = False,
    request_id: str | None = None,
) -> dict:
    """A Canvas-format live event: ``{"metadata": {...}, "body": {...}}``; None fields dropped."""
    inst = institution
    root = inst.accounts[inst.root_account_id]
    gid = lambda local: str(global_id(local, inst.shard_id))  # noqa: E731
    metadata: dict[str, Any] = {
        "root_account_id": gid(inst.root_account_id),
        "root_account_uuid": root["uuid"],
        "root_account_lti_guid": f"{root['uuid']}:canvas-lms",
        "event_name": event_name,
        "event_time": format_time(event_time, time_format),
        "producer": "canvas",
    }
    request_id = request_id or str(uuid.uuid4())
    if system:  # emitted from a background job, e.g. grade recalculation
        metadata.update(job_id=str(int(request_id[:8], 16)), job_tag="Score#recompute")
    else:
        metadata.update(hostname=HOSTNAME, request_id=request_id, http_method="PUT")
    if user_id is not None:
        metadata["user_id"] = gid(user_id)
        metadata["user_login"] = inst.users[user_id]["login_id"]
    if context is not None:
        kind, local = context
        metadata["context_type"], metadata["context_id"] = kind, gid(local)
        account = inst.courses[local]["account_id"] if kind == "Course" else inst.root_account_id
        metadata["context_account_id"] = gid(account)
    return {"metadata": metadata, "body": {k: v for k, v in body.items() if v is not None}}


def send_envelopes(sqs_client: Any, queue_url: str | None, envelopes: list[dict]) -> None:
    """send_message_batch in chunks of 10, copying event_name/event_time into attributes."""
    for start in range(0, len(envelopes), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps(env, ensure_ascii=False),
                "MessageAttributes": {
                    "event_name": {
                        "DataType": "String",
                        "StringValue": env["metadata"]["event_name"],
                    },
                    "event_time": {
                        "DataType": "String",
                        "StringValue": env["metadata"]["event_time"],
                    },
                },
            }
            for i, env in enumerate(envelopes[start : start + 10])
        ]
        failed = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"SQS rejected live events: {failed}")


class ChangeDriver:
    """Applies one random, Canvas-plausible change per step and publishes its live events."""

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
        self.duplicate_rate, self.reorder_rate, self.drop_rate = (
            duplicate_rate,
            reorder_rate,
            drop_rate,
        )
        self.sent: deque[dict] = deque(maxlen=10_000)  # what actually went out, in order
        self._held: list[dict] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._use_global = True
        self._actor = min(institution.users)  # the admin generated first

    # -- public API ----------------------------------------------------------------------------

    def step(self) -> list[dict]:
        with self.institution.lock:
            if self.follow_wall_clock:
                now = datetime.now(UTC).replace(microsecond=0)
                self.institution.clock = max(self.institution.clock, now)
            names = list(MUTATION_WEIGHTS)
            envelopes: list[dict] = []
            for _ in range(10):  # a mutation may find nothing eligible; try another kind
                kind = self.rng.choices(names, [MUTATION_WEIGHTS[n] for n in names])[0]
                envelopes = getattr(self, f"_{kind}")()
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

    def start_background(self, interval_seconds: float) -> None:
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval_seconds):
                try:
                    self.step()
                except Exception:  # keep the dev stack alive; the next step may succeed
                    log.exception("sandbox change step failed")

        self._thread = threading.Thread(target=loop, daemon=True, name="canvas-sandbox-changes")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.flush()

    # -- delivery ------------------------------------------------------------------------------

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

    # -- event building ------------------------------------------------------------------------

    def _id(self, local: int | None) -> str | None:
        if local is None:
            return None
        return str(global_id(local, self.institution.shard_id) if self._use_global else local)

    def _events(
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
                user_id=self._actor,
                context=context,
                time_format=time_format,
                system=system,
                request_id=request_id,
            )
            for name, body, context in specs
        ]

    def _begin(self) -> str:
        """Start a mutation: pick id form for this event group and stamp the clock."""
        self._use_global = self.rng.random() >= 0.1
        return self.institution.stamp()

    def _course_body(self, c: dict) -> dict:
        return {
            "course_id": self._id(c["id"]),
            "uuid": c["uuid"],
            "account_id": self._id(c["account_id"]),
            "name": c["name"],
            "created_at": c["created_at"],
            "updated_at": c["updated_at"],
            "workflow_state": c["workflow_state"],
        }

    def _section_body(self, s: dict) -> dict:
        inst = self.institution
        course = inst.courses[s["course_id"]]
        first = min(
            inst.sections_by_course.get(s["nonxlist_course_id"] or s["course_id"], [s["id"]])
        )
        return {
            "course_section_id": self._id(s["id"]),
            "sis_source_id": s["sis_section_id"],
            "sis_batch_id": None,
            "course_id": self._id(s["course_id"]),
            "root_account_id": self._id(inst.root_account_id),
            "enrollment_term_id": self._id(course["enrollment_term_id"]),
            "name": s["name"],
            "default_section": s["id"] == first,
            "accepting_enrollments": True,
            "can_manually_enroll": None,
            "start_at": s["start_at"],
            "end_at": s["end_at"],
            "workflow_state": s["workflow_state"],
            "restrict_enrollments_to_section_dates": s["restrict_enrollments_to_section_dates"],
            "nonxlist_course_id": self._id(s["nonxlist_course_id"]),
            "stuck_sis_fields": [],
            "integration_id": s["integration_id"],
        }

    def _enrollment_body(self, e: dict) -> dict:
        return {
            "enrollment_id": self._id(e["id"]),
            "course_id": self._id(e["course_id"]),
            "user_id": self._id(e["user_id"]),
            "user_name": self.institution.users[e["user_id"]]["name"],
            "type": e["type"],
            "created_at": e["created_at"],
            "updated_at": e["updated_at"],
            "limit_privileges_to_course_section": e["limit_privileges_to_course_section"],
            "course_section_id": self._id(e["course_section_id"]),
            "associated_user_id": self._id(e.get("associated_user_id")),
            "workflow_state": e["enrollment_state"],
        }

    def _enrollment_state_body(self, e: dict) -> dict:
        now = self.institution.now_iso()
        return {
            "enrollment_id": self._id(e["id"]),
            "state": e["enrollment_state"],
            "state_started_at": e["updated_at"],
            "state_is_current": True,
            "state_valid_until": None,
            "restricted_access": False,
            "access_is_current": True,
            "state_invalidated_at": None,
            "state_recalculated_at": now,
        }

    def _user_body(self, u: dict) -> dict:
        return {
            "user_id": self._id(u["id"]),
            "uuid": u["uuid"],
            "name": u["name"],
            "short_name": u["short_name"],
            "workflow_state": u["workflow_state"],
            "created_at": u["created_at"],
            "updated_at": u.get("updated_at", u["created_at"]),
            "user_login": u["login_id"],
            "user_sis_id": u["sis_user_id"],
        }

    # -- candidate pickers (only real semesters, never deleted objects) ------------------------

    def _live_courses(self) -> list[dict]:
        terms = self.institution.real_term_ids()
        return [
            c
            for c in self.institution.courses.values()
            if c["enrollment_term_id"] in terms and c["workflow_state"] != "deleted"
        ]

    def _live_sections(self, course: dict) -> list[dict]:
        inst = self.institution
        return [
            inst.sections[s]
            for s in inst.sections_by_course.get(course["id"], [])
            if inst.sections[s]["workflow_state"] != "deleted"
        ]

    def _live_enrollments(self, types: set[str] | None = None) -> list[dict]:
        inst = self.institution
        out = []
        for c in self._live_courses():
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

    def _live_users(self) -> list[dict]:
        return [u for u in self.institution.users.values() if u["workflow_state"] != "deleted"]

    # -- mutations -----------------------------------------------------------------------------

    def _create_course(self) -> list[dict]:
        inst, rng = self.institution, self.rng
        terms = sorted(inst.real_term_ids())
        departments = [a for a in inst.accounts.values() if a["parent_account_id"] not in (None, 1)]
        teachers = [u for u in self._live_users() if u["id"] != self._actor]
        if not terms or not departments or not teachers:
            return []
        now = self._begin()
        term = inst.terms[rng.choice(terms)]
        dept = rng.choice(departments)
        cid = inst.next_id("course")
        code = f"NEW{cid}"
        course = {
            "id": cid,
            "name": f"New Course {cid}",
            "course_code": code,
            "public_description": None,
            "account_id": dept["id"],
            "root_account_id": inst.root_account_id,
            "enrollment_term_id": term["id"],
            "workflow_state": "created",
            "course_format": rng.choice(["online", None]),
            "time_zone": "America/New_York",
            "sis_course_id": None,
            "integration_id": None,
            "start_at": term["start_at"],
            "end_at": term["end_at"],
            "uuid": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40)),
            "created_at": now,
            "updated_at": now,
            "default_view": "modules",
            "is_public": False,
            "license": "private",
            "grading_standard_id": None,
        }
        inst.courses[cid] = course
        section = self._new_section(course, course["name"], now)
        teacher = self._new_enrollment(
            course, section, rng.choice(teachers), "TeacherEnrollment", "active", now
        )
        ctx = ("Course", cid)
        return self._events(
            [
                ("course_created", self._course_body(course), ctx),
                ("course_section_created", self._section_body(section), ctx),
                ("enrollment_created", self._enrollment_body(teacher), ctx),
                ("enrollment_state_created", self._enrollment_state_body(teacher), ctx),
            ]
        )

    def _new_section(self, course: dict, name: str, now: str) -> dict:
        inst = self.institution
        section = {
            "id": inst.next_id("section"),
            "course_id": course["id"],
            "name": name,
            "sis_section_id": None,
            "integration_id": None,
            "start_at": None,
            "end_at": None,
            "created_at": now,
            "updated_at": now,
            "restrict_enrollments_to_section_dates": False,
            "nonxlist_course_id": None,
            "sis_course_id": course["sis_course_id"],
            "workflow_state": "active",
        }
        inst.add_section(section)
        return section

    def _new_enrollment(
        self, course: dict, section: dict, user: dict, kind: str, state: str, now: str
    ) -> dict:
        inst = self.institution
        record: dict[str, Any] = {
            "id": inst.next_id("enrollment"),
            "user_id": user["id"],
            "course_id": course["id"],
            "course_section_id": section["id"],
            "type": kind,
            "role": kind,
            "role_id": ROLE_IDS[kind],
            "enrollment_state": state,
            "created_at": now,
            "updated_at": now,
            "start_at": None,
            "end_at": None,
            "last_activity_at": None,
            "last_attended_at": None,
            "total_activity_time": 0,
            "root_account_id": inst.root_account_id,
            "sis_course_id": course["sis_course_id"],
            "sis_section_id": section["sis_section_id"],
            "sis_user_id": user["sis_user_id"],
            "limit_privileges_to_course_section": False,
        }
        if kind == "StudentEnrollment":
            record["grades"] = {
                "html_url": f"https://sandbox.canvas.local/courses/{course['id']}/grades/{user['id']}",
                "current_score": None,
                "current_grade": None,
                "final_score": None,
                "final_grade": None,
            }
        inst.add_enrollment(record)
        return record

    def _update_course(self) -> list[dict]:
        courses = self._live_courses()
        if not courses:
            return []
        course = self.rng.choice(courses)
        change = self.rng.choice(["rename", "state", "format"])
        course["updated_at"] = self._begin()
        if change == "rename":
            course["name"] = f"{course['name'].split(' ~ ')[0]} ~ rev {self.institution.version}"
        elif change == "state":
            course["workflow_state"] = (
                "completed" if course["workflow_state"] == "available" else "available"
            )
        else:
            options = [
                f for f in ("on_campus", "online", "blended", None) if f != course["course_format"]
            ]
            course["course_format"] = self.rng.choice(options)
        return self._events(
            [("course_updated", self._course_body(course), ("Course", course["id"]))]
        )

    def _delete_course(self) -> list[dict]:
        courses = self._live_courses()
        if len(courses) < 3:
            return []
        course = self.rng.choice(courses)
        course["updated_at"] = self._begin()
        course["workflow_state"] = "deleted"  # Canvas reports deletion as course_updated
        return self._events(
            [("course_updated", self._course_body(course), ("Course", course["id"]))]
        )

    def _create_section(self) -> list[dict]:
        courses = self._live_courses()
        if not courses:
            return []
        course = self.rng.choice(courses)
        now = self._begin()
        number = len(self.institution.sections_by_course.get(course["id"], [])) + 1
        section = self._new_section(course, f"{course['course_code']} Section {number:02d}", now)
        return self._events(
            [("course_section_created", self._section_body(section), ("Course", course["id"]))]
        )

    def _update_section(self) -> list[dict]:
        candidates = [s for c in self._live_courses() for s in self._live_sections(c)]
        if not candidates:
            return []
        section = self.rng.choice(candidates)
        section["updated_at"] = now = self._begin()
        if self.rng.random() < 0.5:
            section["name"] = f"{section['name'].split(' ~ ')[0]} ~ rev {self.institution.version}"
        else:
            start = parse_iso(now) + timedelta(days=self.rng.randint(0, 20))
            section["start_at"] = start.strftime("%Y-%m-%dT%H:%M:%SZ")
            section["end_at"] = (start + timedelta(days=self.rng.randint(14, 90))).strftime(
                "%Y-%m-%dT%H:%M:%SZ"
            )
        return self._events(
            [
                (
                    "course_section_updated",
                    self._section_body(section),
                    ("Course", section["course_id"]),
                )
            ]
        )

    def _create_enrollment(self) -> list[dict]:
        inst, rng = self.institution, self.rng
        courses = [c for c in self._live_courses() if self._live_sections(c)]
        if not courses:
            return []
        course = rng.choice(courses)
        section = rng.choice(self._live_sections(course))
        taken = {inst.enrollments[e]["user_id"] for e in inst.enrollments_by_course[course["id"]]}
        now = self._begin()
        specs: list[tuple[str, dict, tuple[str, int] | None]] = []
        existing = [
            u for u in self._live_users() if u["id"] not in taken and u["id"] != self._actor
        ]
        if existing and rng.random() < 0.6:
            user = rng.choice(existing)
        else:
            user = self._new_user(now)
            specs.append(("user_created", self._user_body(user), None))
        kind = rng.choices(["StudentEnrollment", "TaEnrollment", "TeacherEnrollment"], [85, 10, 5])[
            0
        ]
        state = rng.choices(["active", "invited"], [80, 20])[0]
        enrollment = self._new_enrollment(course, section, user, kind, state, now)
        ctx = ("Course", course["id"])
        specs += [
            ("enrollment_created", self._enrollment_body(enrollment), ctx),
            ("enrollment_state_created", self._enrollment_state_body(enrollment), ctx),
        ]
        return self._events(specs)

    def _new_user(self, now: str) -> dict:
        inst, rng = self.institution, self.rng
        uid = inst.next_id("user")
        first, last = rng.choice(FIRST), rng.choice(LAST)
        login = f"new.user{uid}"
        user = {
            "id": uid,
            "name": f"{first} {last}",
            "sortable_name": f"{last}, {first}",
            "short_name": f"{first} {last}",
            "first_name": first,
            "last_name": last,
            "sis_user_id": f"S{uid:07d}",
            "integration_id": None,
            "login_id": login,
            "email": f"{login}@sandbox.example.edu",
            "created_at": now,
            "updated_at": now,
            "workflow_state": "registered",
            "uuid": "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=40)),
        }
        inst.users[uid] = user
        return user

    def _update_enrollment(self) -> list[dict]:
        candidates = self._live_enrollments()
        if not candidates:
            return []
        enrollment = self.rng.choice(candidates)
        options = [
            s
            for s in ("active", "inactive", "completed", "deleted")
            if s != enrollment["enrollment_state"]
        ]
        enrollment["enrollment_state"] = self.rng.choices(options, [5] * (len(options) - 1) + [2])[
            0
        ]
        enrollment["updated_at"] = self._begin()
        ctx = ("Course", enrollment["course_id"])
        return self._events(
            [
                ("enrollment_updated", self._enrollment_body(enrollment), ctx),
                ("enrollment_state_updated", self._enrollment_state_body(enrollment), ctx),
            ]
        )

    def _grade_change(self) -> list[dict]:
        inst, rng = self.institution, self.rng
        candidates = self._live_enrollments({"StudentEnrollment"})
        if not candidates:
            return []
        enrollment = rng.choice(candidates)
        grades = enrollment["grades"]
        old_current, old_final = grades["current_score"], grades["final_score"]
        current = round(rng.uniform(40, 100), 2)
        final = round(current * rng.uniform(0.7, 1.0), 2)
        letters = inst.courses[enrollment["course_id"]].get("grading_standard_id") is not None
        grades.update(
            current_score=current,
            final_score=final,
            current_grade=letter_grade(current) if letters else None,
            final_grade=letter_grade(final) if letters else None,
        )
        enrollment["updated_at"] = now = self._begin()
        body = {
            "user_id": self._id(enrollment["user_id"]),
            "course_id": self._id(enrollment["course_id"]),
            "workflow_state": "active",
            "created_at": enrollment["created_at"],
            "updated_at": now,
            "current_score": current,
            "old_current_score": old_current,
            "final_score": final,
            "old_final_score": old_final,
            "unposted_current_score": current,
            "old_unposted_current_score": old_current,
            "unposted_final_score": final,
            "old_unposted_final_score": old_final,
        }
        return self._events(
            [("course_grade_change", body, ("Course", enrollment["course_id"]))], system=True
        )

    def _update_user(self) -> list[dict]:
        users = [u for u in self._live_users() if u["id"] != self._actor]
        if not users:
            return []
        user = self.rng.choice(users)
        user["updated_at"] = self._begin()
        if self.rng.random() < 0.5:
            first, last = self.rng.choice(FIRST), self.rng.choice(LAST)
            user.update(
                name=f"{first} {last}",
                sortable_name=f"{last}, {first}",
                short_name=f"{first} {last}",
                first_name=first,
                last_name=last,
            )
        else:
            local, domain = user["email"].split("@", 1)
            user["email"] = f"{local.split('+')[0]}+v{self.institution.version}@{domain}"
        return self._events([("user_updated", self._user_body(user), None)])
