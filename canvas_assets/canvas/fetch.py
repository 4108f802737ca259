"""The fetch plan: which Canvas reads make up a semester, or some of its courses.

A semester is its course list (one paginated pass over the term's courses) and, as soon as each
page of it arrives, each table's per-course reads declared in the registry (sections,
enrollments) for that page's courses, all in parallel; then the people enrolled (``People``).
Every object is fetched once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from itertools import zip_longest

from canvas_assets.canvas.errors import CanvasNotFoundError
from canvas_assets.canvas.limiter import CHAIN, FAN_OUT, FILL
from canvas_assets.canvas.session import CanvasSession
from canvas_assets.memory import cyclic_gc_paused
from canvas_assets.tables import SEMESTER_TABLES, SemesterSnapshot, TableSpec, semester_key
from canvas_assets.tables.mapping import enrolled_people
from canvas_assets.tables.spec import PerCourse

COURSE_STATES_FETCHED = ("created", "claimed", "available", "completed")
# The session checks that each include comes back (a scoped key may have them filtered away).
COURSE_INCLUDES = ("term", "total_students", "teachers", "account_name")
# A single course's JSON has no account_name include; its account object carries the name.
SINGLE_COURSE_INCLUDES = ("term", "total_students", "teachers", "account")
# Above this many courses to re-read, one pass over the term's course list is cheaper.
COURSE_LIST_THRESHOLD = 20
# What the warehouse uses of a user (tables.mapping: user_row, display_name): only this is kept
# of the account user list's pages, which may hold many more people than a semester enrolls.
USER_FIELDS = (
    "id",
    "name",
    "sortable_name",
    "short_name",
    "first_name",
    "last_name",
    "email",
    "sis_user_id",
    "login_id",
    "created_at",
)


def fetch_terms(session: CanvasSession) -> list[dict]:
    return list(session.paginate(session.account_path("/terms"), key="enrollment_terms"))


def find_term(terms: Iterable[dict], semester: str) -> dict | None:
    return next((term for term in terms if semester_key(term) == semester), None)


class UnknownSemesterError(LookupError):
    """The partition names a semester Canvas has no term for."""

    def __init__(self, semester: str) -> None:
        super().__init__(
            f"Canvas has no enrollment term for semester {semester!r} (no term with that "
            "sis_term_id, or id for term-<id> keys). Remove the partition or fix the term."
        )


def semester_term(session: CanvasSession, semester: str) -> dict:
    """The Canvas term of a semester partition."""
    term = find_term(fetch_terms(session), semester)
    if term is None:
        raise UnknownSemesterError(semester)
    return term


def _term_course_params(term: dict, includes: Sequence[str]) -> list[tuple[str, object]]:
    params: list[tuple[str, object]] = [("enrollment_term_id", term["id"])]
    params += [("include[]", name) for name in includes]
    params += [("state[]", state) for state in COURSE_STATES_FETCHED]
    return params


def _term_courses(session: CanvasSession, term: dict, includes: Sequence[str]) -> list[dict]:
    path = session.account_path("/courses")
    return list(session.paginate(path, _term_course_params(term, includes), priority=CHAIN))


def _sources(tables: Sequence[TableSpec]) -> list[tuple[str, PerCourse]]:
    return [(spec.name, spec.source) for spec in tables if spec.source is not None]


def _per_course_list(session: CanvasSession, source: PerCourse, course: dict) -> list:
    items = session.paginate(source.url(course["id"]), list(source.params), priority=FAN_OUT)
    return [source.keep(item) for item in items] if source.keep else list(items)


def _pool(session: CanvasSession) -> ThreadPoolExecutor:
    # One thread per request the limiter may allow in flight; the limiter decides how many run.
    return ThreadPoolExecutor(max_workers=session.max_concurrency, thread_name_prefix="canvas")


def fetch_semester(
    session: CanvasSession,
    term: dict,
    semester: str,
    fetched_at: datetime,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
    people_plan: PeoplePlan | None = None,
    on_objects: Callable[[str, list], None] | None = None,
) -> SemesterSnapshot:
    """The term's courses, each course's per-course objects (started as soon as the course's
    page of the list arrives), and the people enrolled (``People``). ``on_objects(table,
    objects)`` is given each course's objects of each table as they are collected, in course
    order, and the people enrolled as ``"users"`` objects (``PeopleHandOver``), in the
    caller's thread: work on them there overlaps the rest of the fetch."""
    snapshot = SemesterSnapshot(semester=semester, term=term, fetched_at=fetched_at)
    sources = _sources(tables)
    people = People(session, people_plan or PeoplePlan())
    pool = _pool(session)
    read = False
    try:
        people.start()
        reads: list[list[Future]] = []
        path = session.account_path("/courses")
        params = _term_course_params(term, COURSE_INCLUDES)
        for page in session.pages(path, params, priority=CHAIN):
            for course in page:  # each course's reads start now, while the list goes on
                snapshot.courses.append(course)
                reads.append(
                    [
                        pool.submit(_per_course_list, session, source, course)
                        for _, source in sources
                    ]
                )
        handover = PeopleHandOver(people, on_objects) if on_objects is not None else None
        _collect(snapshot, sources, reads, handover.course if handover else None)
        names = cache(lambda: enrolled_people(snapshot))  # only if someone is still missing
        enrolled = handover.enrolled if handover is not None else names().keys()
        snapshot.users = people.finish(enrolled, names, pool)
        if handover is not None:
            handover.rest(snapshot.users)
        read = True
    finally:
        people.stop()
        # Once everything is read, no thread has work left: none need be waited for.
        pool.shutdown(wait=not read, cancel_futures=True)
    return snapshot


def _collect(
    snapshot: SemesterSnapshot,
    sources: list[tuple[str, PerCourse]],
    reads: list[list[Future]],
    on_objects: Callable[[str, list], None] | None = None,
) -> None:
    """Add each course's objects in course order (a deterministic snapshot)."""
    for table, _ in sources:
        snapshot.per_course.setdefault(table, [])
    for futures in reads:
        for (table, _), future in zip(sources, futures, strict=True):
            objects = future.result()
            snapshot.per_course[table].extend(objects)
            if on_objects is not None:
                on_objects(table, objects)


class PeopleHandOver:
    """Hands ``on_objects`` each course's objects, and every enrolled person's record once, as
    ``"users"`` objects: as soon as both their first enrollment and their record are in (with
    each course collected), whoever is still missing once the people are all read."""

    def __init__(self, people: People, on_objects: Callable[[str, list], None]) -> None:
        self.people, self.on_objects = people, on_objects
        self.handed: set[int] = set()
        self.enrolled: set[int] = set()  # the ids of everyone enrolled so far

    def course(self, table: str, objects: list) -> None:
        self.on_objects(table, objects)
        if table == "enrollments":  # what enrolls people (``tables.mapping.enrolled_people``)
            new = {int(enrollment.user_id) for enrollment in objects} - self.enrolled
            self.enrolled |= new
            arrived = {uid for uid in self.people.arrivals() if uid in self.enrolled}
            self._hand(self.people.found(sorted((new | arrived) - self.handed)))

    def rest(self, users: dict[int, dict]) -> None:
        self._hand([user for user_id, user in users.items() if user_id not in self.handed])

    def _hand(self, users: list[dict]) -> None:
        if users:
            self.handed.update(int(user["id"]) for user in users)
            self.on_objects("users", users)


def fetch_per_course(
    session: CanvasSession,
    snapshot: SemesterSnapshot,
    tables: Sequence[TableSpec] = SEMESTER_TABLES,
) -> None:
    """Add the objects of every per-course table for ``snapshot.courses``, course by course in
    parallel."""
    sources = _sources(tables)
    with _pool(session) as pool:
        reads = [
            [pool.submit(_per_course_list, session, source, course) for _, source in sources]
            for course in snapshot.courses
        ]
        _collect(snapshot, sources, reads)


@dataclass(frozen=True)
class PeoplePlan:
    """How ``People`` reads: the account user list from ``ends`` ends (0, 1 or 2), and single
    GETs for whoever the list has not reached once the enrollments are known (else the list is
    read to its end first; single GETs then only for people it does not hold)."""

    ends: int = 2
    single_gets: bool = True


class People:
    """The people a semester enrolls, with email, read the fastest way Canvas allows.

    Enrollments carry no email, so people come from the account user list (100 per page, with
    email) or one ``GET /users/:id`` each. The list holds everyone with a login in the account,
    often several times the people enrolled in a term, and each page is known only from the
    previous one, so one pass is a long chain at one request in flight. Hence:

    1. While the courses are read, the list is read from both ends at once, sorted by name
       (``order=asc`` and ``order=desc``): two requests in flight, half the chain each. The
       second end starts only when the first page is full (a short list is read once).
    2. Once the enrollments are known, whoever the two ends have not yet reached is read with
       ``GET /users/:id``, from the middle of the name order outwards, with the room the limiter
       leaves after the two ends' pages; the ends keep going.
    3. Everything stops as soon as every enrolled person is found, or the two ends meet.

    A person is fetched once, except those whose single GET was already in flight when one end
    reached them. The benchmark (``bench/``) compares this with a single pass of the list and
    with single GETs alone.
    """

    def __init__(self, session: CanvasSession, plan: PeoplePlan = PeoplePlan()) -> None:
        self.session = session
        self.plan = plan
        self.single_gets = 0
        # Everyone the list returned so far, enrolled or not (an account can hold many times
        # the semester's people): the fields the warehouse uses, as tuples to stay small.
        self._found: dict[int, tuple] = {}
        self._records: dict[int, dict] = {}  # the enrolled people's, as dicts, once asked for
        self._arrivals: list[int] = []  # ids read since ``arrivals`` was last asked
        self._seen: dict[str, set[int]] = {"asc": set(), "desc": set()}
        self._missing: set[int] | None = None  # enrolled people not yet found, once known
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._all_found = threading.Event()
        self._threads: list[threading.Thread] = []
        self._errors: list[BaseException] = []

    def start(self) -> None:
        if self.plan.ends:
            self._spawn("asc")

    def _spawn(self, order: str) -> None:
        thread = threading.Thread(
            target=self._read_end, args=(order,), name=f"canvas-users-{order}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _read_end(self, order: str) -> None:
        other = "desc" if order == "asc" else "asc"
        params = [("include[]", "email"), ("sort", "username"), ("order", order)]
        path = self.session.account_path("/users")
        try:
            for number, page in enumerate(self.session.pages(path, params, priority=CHAIN)):
                with self._lock:
                    met = any(int(u["id"]) in self._seen[other] for u in page)
                    self._keep(page, order)
                full = len(page) >= 100
                if order == "asc" and number == 0 and full and not met and self.plan.ends > 1:
                    self._spawn("desc")
                if met or self._stop.is_set() or self._all_found.is_set():
                    return
        except BaseException as exc:  # raised again by finish()
            self._errors.append(exc)

    def _keep(self, users: list[dict], end: str | None) -> None:
        """Under the lock: remember what a page of one ``end`` of the list, or a GET, returned."""
        for user in users:
            user_id = int(user["id"])
            if end is not None:
                self._seen[end].add(user_id)
            if user_id not in self._found:
                self._found[user_id] = tuple(user.get(k) for k in USER_FIELDS)
                self._arrivals.append(user_id)
            if self._missing is not None:
                self._missing.discard(user_id)
        if self._missing is not None and not self._missing:
            self._all_found.set()

    def finish(
        self,
        enrolled: Collection[int],
        names: Callable[[], Mapping[int, str]],
        pool: ThreadPoolExecutor,
    ) -> dict[int, dict]:
        """The people ``enrolled``, once each is found; ``names`` (id → sortable name, asked
        for only if someone is still missing) orders the single GETs."""
        if not self.plan.single_gets:
            for thread in self._threads:  # the list to its end (or until everyone is found)
                thread.join()
        with self._lock:
            self._missing = set(enrolled) - self._found.keys()
            missing = list(self._missing)
            if not self._missing:
                self._all_found.set()
        by_name = names() if missing else {}  # outside the lock: the list's ends go on
        missing.sort(key=lambda uid: (by_name[uid].casefold(), uid))
        gets = [pool.submit(self._get_one, user_id) for user_id in _middle_out(missing)]
        for future in gets:
            future.result()
        self.stop()
        if self._errors:
            raise self._errors[0]
        with cyclic_gc_paused(), self._lock:  # a dict per person, the semester's reads held
            return {user_id: self._record(user_id) for user_id in sorted(enrolled)}

    def arrivals(self) -> list[int]:
        """The ids of the people read since the last call."""
        with self._lock:
            arrived, self._arrivals = self._arrivals, []
        return arrived

    def found(self, user_ids: Iterable[int]) -> list[dict]:
        """The records of those of ``user_ids`` that have been read so far."""
        with self._lock:
            return [self._record(user_id) for user_id in user_ids if user_id in self._found]

    def _record(self, user_id: int) -> dict:
        """Under the lock: one person's record, the same dict each time it is asked for."""
        record = self._records.get(user_id)
        if record is None:
            record = dict(zip(USER_FIELDS, self._found[user_id], strict=True))
            self._records[user_id] = record
        return record

    def _get_one(self, user_id: int) -> None:
        with self._lock:
            if self._missing is None or user_id not in self._missing:
                return  # an end of the list reached them first
        user = self.session.get(f"/users/{user_id}", priority=FILL)
        with self._lock:
            self.single_gets += 1
            self._keep([user], None)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _middle_out(items: list[int]) -> list[int]:
    """``items`` from the middle outwards: the two ends of a list read from both ends are
    reached first, its middle last."""
    middle = len(items) // 2
    right, left = items[middle:], items[:middle][::-1]
    return [item for pair in zip_longest(right, left) for item in pair if item is not None]


def fetch_user_or_none(session: CanvasSession, user_id: int) -> dict | None:
    """One user with email, or None when Canvas no longer has them."""
    try:
        return session.get(f"/users/{user_id}")
    except CanvasNotFoundError:
        return None


def fetch_courses(session: CanvasSession, term: dict, course_ids: Sequence[int]) -> list[dict]:
    """The current JSON of each course in ``course_ids`` that Canvas still has (any term, any
    state but deleted): single GETs, or one pass over the term's list when there are many."""
    includes = [("include[]", name) for name in SINGLE_COURSE_INCLUDES]

    def one(course_id: int) -> dict | None:
        try:
            return session.get(f"/courses/{course_id}", includes)
        except CanvasNotFoundError:
            return None

    if len(course_ids) > COURSE_LIST_THRESHOLD:
        wanted = set(course_ids)
        courses = [
            c for c in _term_courses(session, term, COURSE_INCLUDES) if int(c["id"]) in wanted
        ]
        # Courses not in the term's list were deleted or moved: find out which, one by one.
        outside = sorted(wanted - {int(c["id"]) for c in courses})
    else:
        courses, outside = [], list(course_ids)
    courses += [c for c in session.map_concurrent(one, outside) if c is not None]
    for course in courses:
        if not course.get("account_name") and isinstance(course.get("account"), dict):
            course["account_name"] = course["account"].get("name")
    return courses
