"""A deterministic, in-memory Canvas institution: accounts, terms, courses, sections, users.

Records are plain dicts keyed by Canvas's REST JSON field names so the server can serialize them
with little translation. Everything derives from ``random.Random(seed)`` and fixed base dates, so
``generate_institution(size, seed)`` yields identical ids and values on every run.
"""

from __future__ import annotations

import random
import string
import threading
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tqdm import tqdm

PROGRESS_FROM_COURSES = 1_000  # institutions this large show a progress bar while built
SHARD_ID = 2107  # global id = SHARD_ID * 10**13 + local id
GLOBAL_ID_BASE = 10**13
HOST = "https://sandbox.canvas.local"

# Per *real* semester; the default term gets a handful of courses on top.
SIZES: dict[str, dict[str, Any]] = {
    "small": {
        "courses": 12,
        "users": 120,
        "students": 220,
        "default_courses": 2,
        "terms": ["2025FA", "2026SP", "2026FA"],
    },
    "medium": {
        "courses": 150,
        "users": 1_500,
        "students": 3_650,
        "default_courses": 4,
        "terms": ["2025FA", "2026SP", "2026FA"],
    },
    # Two real semesters only, so the large build stays well under 20 s / 2 GB.
    "large": {
        "courses": 1_050,
        "users": 10_400,
        "students": 29_600,
        "default_courses": 8,
        "terms": ["2026SP", "2026FA"],
    },
    # A large university's semester (about 5,000 courses, 8,000 sections, 150,000 enrollments,
    # 40,000 people) in an account of 120,000 users: most of an account's users are alumni and
    # past students who are enrolled in no current course. One real semester keeps the build
    # (about a minute, 1 GB) to what a benchmark can afford.
    "university": {
        "courses": 5_000,
        "users": 37_500,
        "students": 142_000,
        "default_courses": 8,
        "terms": ["2026SP"],
        "account_users": 120_000,
    },
}
SCALED_KEYS = ("courses", "users", "students", "account_users")


def size_spec(size: str, scale: float = 1.0, account_users: int | None = None) -> dict[str, Any]:
    """The generation parameters of ``size``, its per-semester counts multiplied by ``scale``;
    ``account_users`` sets how many users the whole account has (enrolled or not)."""
    spec = dict(SIZES[size])
    if scale != 1.0:
        for key in SCALED_KEYS:
            if key in spec:
                spec[key] = max(1, round(spec[key] * scale))
    if account_users is not None:
        spec["account_users"] = account_users
    return spec


TERM_DATES: dict[str, tuple[datetime, datetime, str]] = {
    "2025FA": (
        datetime(2025, 8, 25, 6, tzinfo=UTC),
        datetime(2025, 12, 19, 6, tzinfo=UTC),
        "Fall 2025",
    ),
    "2026SP": (
        datetime(2026, 1, 12, 6, tzinfo=UTC),
        datetime(2026, 5, 15, 6, tzinfo=UTC),
        "Spring 2026",
    ),
    "2026FA": (
        datetime(2026, 8, 24, 6, tzinfo=UTC),
        datetime(2026, 12, 18, 6, tzinfo=UTC),
        "Fall 2026",
    ),
}
CLOCK_START = datetime(2026, 9, 1, 12, 0, tzinfo=UTC)
EPOCH = datetime(2024, 6, 1, 6, tzinfo=UTC)  # account/user creation window starts here

ROLE_IDS = {
    "StudentEnrollment": 3,
    "TeacherEnrollment": 4,
    "TaEnrollment": 5,
    "ObserverEnrollment": 7,
}
# Distinct id ranges per kind so a course id mistaken for a user id is caught in tests.
ID_START = {
    "account": 1,
    "term": 1,
    "course": 101,
    "section": 1_001,
    "user": 5_001,
    "enrollment": 100_001,
}

FIRST = [
    "Ava",
    "Liam",
    "Noah",
    "Emma",
    "Olivia",
    "Mateo",
    "Sofía",
    "Chloé",
    "Björn",
    "Amélie",
    "Jürgen",
    "Søren",
    "Nnamdi",
    "Aisha",
    "Priya",
    "Kenji",
    "Yuki",
    "Ines",
    "Omar",
    "Zoë",
    "Łukasz",
    "Renée",
    "Dmitri",
    "Fatima",
    "Thảo",
    "Mia",
    "Ethan",
    "Grace",
    "Lucas",
    "Hana",
]
LAST = [
    "Smith",
    "García",
    "Müller",
    "Nguyễn",
    "Kowalski",
    "O'Brien",
    "Núñez",
    "Ångström",
    "Żółć",
    "Johnson",
    "Brown",
    "Davis",
    "Martínez",
    "Okafor",
    "Patel",
    "Tanaka",
    "Rossi",
    "Dubois",
    "Øberg",
    "Lee",
    "Walker",
    "Young",
    "Hernández",
    "Çelik",
    "Schäfer",
    "Kim",
]
# (first, last, display name) written out so name order and unicode survive exactly.
SPECIAL_NAMES = [
    ("José", "Núñez", "José Núñez"),
    ("Zoë", "Ångström", "Zoë Ångström"),
    ("Łukasz", "Żółć", "Łukasz Żółć"),
    ("小龙", "李", "李 小龙"),
    ("Ngọc", "Trần", "Ngọc Trần"),
]
SUBJECTS = {
    "College of Arts & Sciences": ["Mathematics", "History", "Biology", "Música"],
    "College of Engineering": ["Computer Science", "Electrical Engineering"],
    "School of Business": ["Accounting", "Économie"],
}
TOPICS = [
    "Introduction to",
    "Advanced",
    "Seminar in",
    "Topics in",
    "Foundations of",
    "Research Methods in",
]
TIME_ZONES = ["America/New_York", "America/Denver", "America/Chicago", "America/Los_Angeles"]
ALNUM = string.ascii_letters + string.digits


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def global_id(local: int, shard: int = SHARD_ID) -> int:
    return shard * GLOBAL_ID_BASE + local


def letter_grade(score: float | None) -> str | None:
    if score is None:
        return None
    for cutoff, letter in (
        (93, "A"),
        (90, "A-"),
        (87, "B+"),
        (83, "B"),
        (80, "B-"),
        (77, "C+"),
        (70, "C"),
        (60, "D"),
    ):
        if score >= cutoff:
            return letter
    return "F"


@dataclass
class Institution:
    root_account_id: int
    shard_id: int
    accounts: dict[int, dict] = field(default_factory=dict)
    terms: dict[int, dict] = field(default_factory=dict)
    courses: dict[int, dict] = field(default_factory=dict)
    sections: dict[int, dict] = field(default_factory=dict)
    enrollments: dict[int, dict] = field(default_factory=dict)
    users: dict[int, dict] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)
    clock: datetime = CLOCK_START
    # Bumped on every mutation; lets readers cache derived views (e.g. the sorted user list).
    version: int = 0
    _ids: dict[str, int] = field(default_factory=dict, repr=False)
    # Child-id indexes: section/enrollment course and section never change after creation
    # (cross-listing happens only at generation time, before enrollments exist).
    sections_by_course: dict[int, list[int]] = field(default_factory=dict, repr=False)
    enrollments_by_course: dict[int, list[int]] = field(default_factory=dict, repr=False)
    enrollments_by_section: dict[int, list[int]] = field(default_factory=dict, repr=False)

    @property
    def root_account_uuid(self) -> str:
        """What its Live Events carry as ``metadata.root_account_uuid``."""
        return self.accounts[self.root_account_id]["uuid"]

    def next_id(self, kind: str) -> int:
        with self.lock:
            value = self._ids.get(kind, ID_START.get(kind, 1))
            self._ids[kind] = value + 1
            return value

    def tick(self, seconds: float = 3.0) -> datetime:
        """Advance the model clock; whole seconds keep ISO updated_at strictly increasing."""
        with self.lock:
            self.clock += timedelta(seconds=max(1, round(seconds)))
            return self.clock

    def now_iso(self) -> str:
        return iso(self.clock)  # type: ignore[return-value]

    def stamp(self) -> str:
        """Tick, mark the model changed, and return the new updated_at value."""
        with self.lock:
            self.tick()
            self.version += 1
            return self.now_iso()

    def add_section(self, section: dict) -> None:
        with self.lock:
            self.sections[section["id"]] = section
            self.sections_by_course.setdefault(section["course_id"], []).append(section["id"])

    def add_enrollment(self, enrollment: dict) -> None:
        with self.lock:
            self.enrollments[enrollment["id"]] = enrollment
            self.enrollments_by_course.setdefault(enrollment["course_id"], []).append(
                enrollment["id"]
            )
            self.enrollments_by_section.setdefault(enrollment["course_section_id"], []).append(
                enrollment["id"]
            )

    def real_term_ids(self) -> set[int]:
        return {t["id"] for t in self.terms.values() if t["sis_term_id"]}

    def descendant_accounts(self, account_id: int) -> set[int]:
        """The account and every account below it."""
        children: dict[int | None, list[int]] = {}
        for a in self.accounts.values():
            children.setdefault(a["parent_account_id"], []).append(a["id"])
        out, todo = set(), [account_id]
        while todo:
            current = todo.pop()
            out.add(current)
            todo.extend(children.get(current, []))
        return out


class _Builder:
    """Holds the rng and the institution while generate_institution fills it."""

    def __init__(self, seed: int, shard_id: int = SHARD_ID) -> None:
        self.rng = random.Random(seed)
        self.inst = Institution(root_account_id=1, shard_id=shard_id)

    def uuid(self) -> str:
        # Canvas uuids are 40-character random alphanumeric slugs, not RFC 4122 uuids.
        return "".join(self.rng.choices(ALNUM, k=40))

    def between(self, start: datetime, end: datetime) -> datetime:
        span = max(0, int((end - start).total_seconds()))
        return start + timedelta(seconds=self.rng.randint(0, span))

    def account(self, name: str, parent: int | None, sis: str | None) -> dict:
        aid = self.inst.next_id("account")
        record = {
            "id": aid,
            "name": name,
            "parent_account_id": parent,
            "root_account_id": None if parent is None else 1,
            "workflow_state": "active",
            "sis_account_id": sis,
            "uuid": self.uuid(),
        }
        self.inst.accounts[aid] = record
        return record

    def user(self, deleted: bool = False) -> dict:
        rng = self.rng
        uid = self.inst.next_id("user")
        if rng.random() < 0.03:
            first, last, name = rng.choice(SPECIAL_NAMES)
        else:
            first, last = rng.choice(FIRST), rng.choice(LAST)
            name = f"{first} {last}"
        slug = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
        slug = "".join(ch for ch in slug.lower() if ch.isalnum() or ch == ".").strip(".") or "user"
        login = f"{slug}{uid}"
        created = self.between(EPOCH, CLOCK_START - timedelta(days=2))
        record = {
            "id": uid,
            "name": name,
            "sortable_name": f"{last}, {first}",
            "short_name": name,
            "first_name": first,
            "last_name": last,
            "sis_user_id": None if rng.random() < 0.1 else f"S{uid:07d}",
            "integration_id": None,
            "login_id": login,
            "email": f"{login}@sandbox.example.edu",
            "created_at": iso(created),
            "workflow_state": "deleted" if deleted else "registered",
            "uuid": self.uuid(),
        }
        self.inst.users[uid] = record
        return record


def _course_state(rng: random.Random, term_end: datetime | None) -> str:
    if term_end is not None and term_end < CLOCK_START:
        states, weights = (
            ["available", "completed", "created", "claimed", "deleted"],
            [50, 40, 3, 3, 4],
        )
    else:
        states, weights = (
            ["available", "created", "claimed", "completed", "deleted"],
            [80, 6, 5, 4, 5],
        )
    return rng.choices(states, weights)[0]


def _enrollment_state(rng: random.Random, course_state: str) -> str:
    if course_state == "completed" and rng.random() < 0.85:
        return "completed"
    return rng.choices(["active", "invited", "inactive", "completed", "deleted"], [88, 4, 3, 3, 2])[
        0
    ]


def generate_institution(
    size: str = "small",
    seed: int = 0,
    scale: float = 1.0,
    account_users: int | None = None,
    shard_id: int = SHARD_ID,
) -> Institution:
    """Build a whole institution; deterministic for (size, seed, scale, account_users, shard).
    Another ``shard_id`` with the same seed gives the same local ids (as two institutions on
    two shards of Canvas can have) and a root account uuid of its own."""
    spec = size_spec(size, scale, account_users)
    b = _Builder(seed, shard_id)
    rng, inst = b.rng, b.inst

    root = b.account("Sandbox University", None, "ROOT")
    if shard_id != SHARD_ID:
        root["uuid"] = "".join(random.Random(f"{seed}/{shard_id}").choices(ALNUM, k=40))
    departments: list[dict] = []
    for college, subjects in SUBJECTS.items():
        parent = b.account(college, root["id"], f"COL-{len(inst.accounts)}")
        departments += [b.account(s, parent["id"], f"DEP-{len(inst.accounts)}") for s in subjects]

    default_term = {
        "id": inst.next_id("term"),
        "name": "Default Term",
        "sis_term_id": None,
        "start_at": None,
        "end_at": None,
        "workflow_state": "active",
        "created_at": iso(EPOCH),
    }
    inst.terms[default_term["id"]] = default_term
    for sis in spec["terms"]:
        start, end, name = TERM_DATES[sis]
        tid = inst.next_id("term")
        inst.terms[tid] = {
            "id": tid,
            "name": name,
            "sis_term_id": sis,
            "start_at": iso(start),
            "end_at": iso(end),
            "workflow_state": "active",
            "created_at": iso(start - timedelta(days=120)),
        }

    admin = b.user()  # the account admin who "performs" live-event changes
    admin.update(
        name="Sandbox Admin",
        sortable_name="Admin, Sandbox",
        short_name="Sandbox Admin",
        first_name="Sandbox",
        last_name="Admin",
    )
    n_teachers, n_parents = max(4, spec["courses"] // 3), max(2, spec["users"] // 50)
    teacher_pool = [b.user() for _ in range(n_teachers)]
    # Students overlap between semesters: each term samples from a pool ~1.3x its size, or from
    # everyone the account holds when its size is given.
    n_students = int(spec["users"] * 1.3)
    if "account_users" in spec:
        n_students = max(spec["users"], spec["account_users"] - n_teachers - n_parents - 1)
    terms = list(inst.terms.values())
    # Large institutions take seconds to build: show how far it got.
    progress = tqdm(
        total=n_students + len(terms) * spec["courses"],
        desc=f"generating the {size} sandbox",
        unit="object",
        unit_scale=True,
        disable=spec["courses"] < PROGRESS_FROM_COURSES,
        leave=False,
    )
    student_pool = []
    for _ in range(n_students):
        student_pool.append(b.user(deleted=rng.random() < 0.01))
        progress.update()
    parents = [b.user() for _ in range(n_parents)]

    for term in terms:
        n_courses = spec["courses"] if term["sis_term_id"] else spec["default_courses"]
        per_course = spec["students"] / max(1, spec["courses"])
        population = (
            [u for u in student_pool if u["workflow_state"] != "deleted"]
            if not term["sis_term_id"]
            else rng.sample(student_pool, spec["users"])
        )
        _fill_term(b, term, n_courses, departments, teacher_pool, population, parents, per_course)
        progress.update(spec["courses"])
    progress.close()
    return inst


def _fill_term(
    b: _Builder,
    term: dict,
    n_courses: int,
    departments: list[dict],
    teachers: list[dict],
    population: list[dict],
    parents: list[dict],
    per_course: float,
) -> None:
    term_courses = _term_courses(b, term, n_courses, departments)
    _cross_list(b, term_courses)
    _enroll_term(b, term_courses, teachers, population, parents, per_course)


def _term_courses(b: _Builder, term: dict, n_courses: int, departments: list[dict]) -> list[dict]:
    """The term's courses, each with one to three sections."""
    rng, inst = b.rng, b.inst
    t_start = parse_iso(term["start_at"]) if term["start_at"] else None
    t_end = parse_iso(term["end_at"]) if term["end_at"] else None
    label = term["sis_term_id"] or "DFLT"
    created_floor = (t_start or CLOCK_START) - timedelta(days=150)
    term_courses: list[dict] = []
    for _ in range(n_courses):
        cid = inst.next_id("course")
        dept = rng.choice(departments)
        code = f"{dept['name'][:4].upper().replace(' ', '')}{rng.randint(100, 499)}"
        start = (
            None
            if t_start is None or rng.random() < 0.1
            else t_start + timedelta(days=rng.randint(0, 7))
        )
        end = (
            None
            if start is None or rng.random() < 0.1
            else max(start, t_end or start) + timedelta(days=rng.randint(0, 3))
        )
        created = b.between(created_floor, min(CLOCK_START, t_start or CLOCK_START))
        course = {
            "id": cid,
            "name": f"{rng.choice(TOPICS)} {dept['name']} ({label})",
            "course_code": code,
            "public_description": None if rng.random() < 0.3 else f"{dept['name']} course {code}.",
            "account_id": dept["id"],
            "root_account_id": inst.root_account_id,
            "enrollment_term_id": term["id"],
            "workflow_state": _course_state(rng, t_end),
            "course_format": rng.choice(["on_campus", "online", "blended", None]),
            "time_zone": rng.choice(TIME_ZONES),
            "sis_course_id": None if rng.random() < 0.15 else f"{label}-{code}-{cid}",
            "integration_id": None,
            "start_at": iso(start),
            "end_at": iso(end),
            "uuid": b.uuid(),
            "created_at": iso(created),
            "updated_at": iso(b.between(created, CLOCK_START - timedelta(hours=1))),
            "default_view": "modules",
            "is_public": False,
            "license": "private",
            # Canvas's "grading scheme" switch: None means scores without letter grades.
            "grading_standard_id": None if rng.random() < 0.25 else 1,
        }
        inst.courses[cid] = course
        term_courses.append(course)
        n_sections = rng.choices([1, 2, 3], [50, 40, 10])[0]
        for number in range(n_sections):
            _section(b, course, number, t_start, t_end)

    return term_courses


def _cross_list(b: _Builder, term_courses: list[dict]) -> None:
    """Move ~5% of sections into another course of the same term."""
    rng, inst = b.rng, b.inst
    if len(term_courses) > 1:
        movable = [
            s
            for c in term_courses
            for s in (inst.sections[i] for i in inst.sections_by_course[c["id"]][1:])
        ]
        total = sum(len(inst.sections_by_course[c["id"]]) for c in term_courses)
        chance = min(1.0, 0.05 * total / max(1, len(movable)))
        for section in movable:
            if rng.random() < chance:
                target = rng.choice(term_courses)
                if target["id"] == section["course_id"]:
                    continue
                inst.sections_by_course[section["course_id"]].remove(section["id"])
                section["nonxlist_course_id"] = section["course_id"]
                section["course_id"] = target["id"]
                section["sis_course_id"] = target["sis_course_id"]
                inst.sections_by_course[target["id"]].append(section["id"])


def _enroll_term(
    b: _Builder,
    term_courses: list[dict],
    teachers: list[dict],
    population: list[dict],
    parents: list[dict],
    per_course: float,
) -> None:
    """Teachers, TAs, students and observers for each course of the term."""
    rng, inst = b.rng, b.inst
    # A cyclic walk through the shuffled population makes every sampled user enrolled somewhere.
    stream = population[:]
    rng.shuffle(stream)
    cursor = 0
    for course in term_courses:
        section_ids = [
            s
            for s in inst.sections_by_course[course["id"]]
            if inst.sections[s]["workflow_state"] != "deleted"
        ]
        if not section_ids:
            continue
        course_teachers = rng.sample(teachers, 2 if rng.random() < 0.15 else 1)
        for sid in section_ids:
            for t in course_teachers:
                _enroll(b, course, sid, t, "TeacherEnrollment")
        if rng.random() < 0.4:
            _enroll(b, course, rng.choice(section_ids), rng.choice(teachers), "TaEnrollment")
        taken: set[int] = set()
        students: list[dict] = []
        for _ in range(max(1, round(rng.gauss(per_course, per_course * 0.3)))):
            user = stream[cursor % len(stream)]
            cursor += 1
            if user["id"] in taken:
                continue
            taken.add(user["id"])
            students.append(_enroll(b, course, rng.choice(section_ids), user, "StudentEnrollment"))
        if students and rng.random() < 0.25:
            child = rng.choice(students)
            _enroll(
                b,
                course,
                child["course_section_id"],
                rng.choice(parents),
                "ObserverEnrollment",
                associated=child["user_id"],
            )


def _section(
    b: _Builder, course: dict, number: int, t_start: datetime | None, t_end: datetime | None
) -> dict:
    rng, inst = b.rng, b.inst
    sid = inst.next_id("section")
    start = end = None
    if number > 0 and t_start and rng.random() < 0.2:
        start = t_start + timedelta(days=rng.randint(0, 30))
        end = start + timedelta(days=rng.randint(30, 90))
    created = parse_iso(course["created_at"]) + timedelta(minutes=number)
    deleted = number > 0 and rng.random() < 0.03
    section = {
        "id": sid,
        "course_id": course["id"],
        "name": course["name"]
        if number == 0
        else f"{course['course_code']} Section {number + 1:02d}",
        "sis_section_id": None
        if course["sis_course_id"] is None or rng.random() < 0.1
        else f"{course['sis_course_id']}-{number + 1:02d}",
        "integration_id": None,
        "start_at": iso(start),
        "end_at": iso(end),
        "created_at": iso(created),
        "updated_at": iso(b.between(created, CLOCK_START - timedelta(hours=1))),
        "restrict_enrollments_to_section_dates": start is not None and rng.random() < 0.5,
        "nonxlist_course_id": None,
        "sis_course_id": course["sis_course_id"],
        "workflow_state": "deleted" if deleted else "active",
    }
    inst.add_section(section)
    return section


def _enroll(
    b: _Builder, course: dict, section_id: int, user: dict, kind: str, associated: int | None = None
) -> dict:
    rng, inst = b.rng, b.inst
    eid = inst.next_id("enrollment")
    state = (
        "deleted"
        if user["workflow_state"] == "deleted"
        else _enrollment_state(rng, course["workflow_state"])
    )
    created = b.between(parse_iso(course["created_at"]), CLOCK_START - timedelta(days=1))
    active = state in ("active", "completed") and rng.random() < 0.8
    section = inst.sections[section_id]
    record: dict[str, Any] = {
        "id": eid,
        "user_id": user["id"],
        "course_id": course["id"],
        "course_section_id": section_id,
        "type": kind,
        "role": kind,
        "role_id": ROLE_IDS[kind],
        "enrollment_state": state,
        "created_at": iso(created),
        "updated_at": iso(b.between(created, CLOCK_START - timedelta(hours=1))),
        "start_at": None,
        "end_at": None,
        "last_activity_at": iso(b.between(created, CLOCK_START)) if active else None,
        "last_attended_at": iso(b.between(created, CLOCK_START))
        if active and rng.random() < 0.3
        else None,
        "total_activity_time": rng.randint(60, 400_000) if active else 0,
        "root_account_id": inst.root_account_id,
        "sis_course_id": course["sis_course_id"],
        "sis_section_id": section["sis_section_id"],
        "sis_user_id": user["sis_user_id"],
        "limit_privileges_to_course_section": False,
    }
    if kind == "ObserverEnrollment":
        record["associated_user_id"] = associated
    if kind == "StudentEnrollment":
        current = round(rng.uniform(35, 100), 2) if active else None
        final = None if current is None else round(current * rng.uniform(0.6, 1.0), 2)
        letters = course["grading_standard_id"] is not None
        record["grades"] = {
            "html_url": f"{HOST}/courses/{course['id']}/grades/{user['id']}",
            "current_score": current,
            "final_score": final,
            "current_grade": letter_grade(current) if letters else None,
            "final_grade": letter_grade(final) if letters else None,
        }
    inst.add_enrollment(record)
    return record
