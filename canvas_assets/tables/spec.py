"""What one declaration of a table says, and the snapshot of Canvas data that tables are mapped
from. The declarations themselves are in ``tables.registry``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from canvas_assets.tables.models import Strict


def semester_key(term: dict) -> str:
    """The partition key of a term: its SIS id, or ``term-<canvas id>`` when it has none."""
    sis = term.get("sis_term_id")
    return str(sis) if sis else f"term-{term['id']}"


@dataclass
class SemesterSnapshot:
    """Everything Canvas returned for one semester (or some of its courses) in one run.

    ``per_course`` holds the objects of each table fetched with one paginated GET per course
    (keyed by table name, see ``PerCourse``); ``users`` the people enrolled, by id.
    """

    semester: str
    term: dict
    fetched_at: datetime
    courses: list[dict] = field(default_factory=list)
    per_course: dict[str, list[Any]] = field(default_factory=dict)
    users: dict[int, dict] = field(default_factory=dict)

    def objects(self, table: str) -> list[Any]:
        return self.per_course.get(table, [])


@dataclass(frozen=True)
class PerCourse:
    """A table whose Canvas objects are listed per course: ``path`` has ``{course_id}``.
    ``keep`` turns each object into what the snapshot holds of it (the JSON itself by default;
    a large table keeps only the fields its mapping reads)."""

    path: str
    params: tuple[tuple[str, str], ...] = ()
    keep: Callable[[dict], Any] | None = None

    def url(self, course_id: int) -> str:
        return self.path.format(course_id=course_id)

    @property
    def template(self) -> str:
        return self.path.format(course_id=":id")


@dataclass(frozen=True)
class TableSpec:
    """One warehouse table: everything assets, checks, mapping and writes derive from.

    - ``model`` is the pandera model: the columns, their types, rules and documentation.
    - ``rows`` maps a ``SemesterSnapshot`` to the table's rows.
    - ``source`` says how its objects are fetched when they come per course (sections,
      enrollments); ``None`` for what the fetch plan reads otherwise (courses, users) or for
      a table derived from data already fetched.
    - ``key`` is the upsert key. ``course_column`` names the column holding the course id, which
      scopes a Live Events apply to the courses it re-read; ``None`` means an apply never marks
      rows deleted by absence. ``kept_by`` (table, column): a row stays active only while an
      active row of that table references it (a person with no enrollment left is removed).
    - ``references`` (column → table) are checked inside the partition by pandera.
    - ``upstream`` is the asset it follows in the lineage graph.
    - ``reads`` are the Canvas paths (``/courses/:id``) that fetch its objects besides its
      ``source``: the table's materializations report those requests.
    - ``staged``: its rows map from its own objects alone (per course, or the people the fetch
      hands over), so a backfill maps, validates and upserts them (uncommitted) chunk by chunk
      while the fetch goes on (``backfill.staging``), instead of after Canvas's last answer.
    - ``shared_rows``: writers of other semesters update its rows too (a person's contact
      fields, ``live_events.store.update_contact_elsewhere``). A backfill stages it but upserts
      it once, after the fetch, so that its uncommitted rows do not hold those writers up
      through the fetch.
    """

    name: str
    model: type[Strict]
    description: str
    rows: Callable[[SemesterSnapshot], Iterable[dict]] | None = None
    source: PerCourse | None = None
    key: tuple[str, ...] = ("semester", "institution_id")
    course_column: str | None = None
    kept_by: tuple[str, str] | None = None
    references: Mapping[str, str] = field(default_factory=dict)
    upstream: str | None = None
    reads: tuple[str, ...] = ()
    staged: bool = False
    shared_rows: bool = False

    @property
    def planning_columns(self) -> tuple[str, ...]:
        """The columns the writes and applies filter and join on: the ones whose statistics
        decide their plans (see ``warehouse.writes.analyze_tables``)."""
        named = ("semester", "institution_id", *self.key, self.course_column, *self.references)
        return tuple(dict.fromkeys(c for c in (*named, "deleted_at", "source_updated_at") if c))

    @property
    def request_paths(self) -> tuple[str, ...]:
        """Every Canvas path template whose requests read this table's objects."""
        own = (self.source.template,) if self.source is not None else ()
        return own + self.reads
