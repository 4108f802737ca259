"""`canvas-assets events replay FILE...`: apply archived or dead-lettered Live Events through the
same landing, routing and apply path as the sensor.

Counts add up per record of the files (a JSON Lines line, or an item of a JSON list): each is
applied, a duplicate of an event landed before, skipped (a type or semester not followed),
quarantined (or already quarantined by an earlier replay), still pending (its semester is not
imported yet, or Canvas could not be read), or not stored (PostgreSQL refused even the
quarantine row). A bad line gets a one-line notice naming file and line; a file that cannot be
read at all gets a one-line error and the others are still replayed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import psycopg
from tqdm import tqdm

from canvas_assets.canvas import CanvasError, CanvasResource
from canvas_assets.defs.resources import canvas_resource, ready, warehouse_resource
from canvas_assets.institutions import Institution
from canvas_assets.live_events import land
from canvas_assets.live_events.parse import MAX_DEPTH, QuarantineError, load_json
from canvas_assets.live_events.passes import apply_institution
from canvas_assets.live_events.store import event_outcomes
from canvas_assets.outcomes import Counts, first_line
from canvas_assets.settings import (
    CANVAS_API_TOKEN_ENV,
    CANVAS_BASE_URL_ENV,
    SettingError,
    Settings,
)
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.migrate import SHARED
from canvas_assets.warehouse.reads import imported_semesters

CHUNK = 500  # records landed per transaction
PROGRESS_FROM = 2_000  # records: smaller files need no progress bar
MAX_NOTICES = 20
JSON_LINES_SUFFIXES = {".jsonl", ".ndjson"}
ROUTING_ROUNDS = 20  # route_pending rounds (each a bounded number of Canvas look-ups)


class ReplayFileError(ValueError):
    """A file that cannot be read at all; the text is a one-line error naming file and line."""


@dataclass(frozen=True)
class Record:
    """One message of a file: where it is, its SQS message id (if any), its raw body, and why
    it is already known to be bad (a notice)."""

    where: str
    message_id: object
    body: str | bytes
    problem: str | None = None


@dataclass
class ReplayReport(Counts):
    read: int = 0
    applied: int = 0
    duplicate: int = 0
    skipped: int = 0
    quarantined: int = 0  # already_quarantined included
    already_quarantined: int = 0
    pending: int = 0
    not_stored: int = 0
    earlier_applied: int = 0  # events landed before this replay, applied by it too
    unreadable: list[str] = field(default_factory=list)  # one-line errors of unread files
    notices: list[str] = field(default_factory=list)

    def summary(self) -> str:
        text = (
            f"read {self.read}: applied {self.applied}, duplicate {self.duplicate}, "
            f"skipped {self.skipped}, quarantined {self.quarantined}"
        )
        if self.already_quarantined:
            text += f" ({self.already_quarantined} already quarantined)"
        if self.pending:
            text += f", still pending {self.pending}"
        if self.not_stored:
            text += f", not stored {self.not_stored} (left for a later replay)"
        if self.earlier_applied:
            text += f"; also applied {self.earlier_applied} events landed earlier"
        return text


# -- reading ----------------------------------------------------------------------------------
def _unwrap(value: object, where: str) -> Record:
    """An SQS message (``{"MessageId", "Body"}``), a raw body string, or an envelope."""
    if isinstance(value, dict) and "Body" in value:
        body = value["Body"]
        raw = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
        return Record(where, value.get("MessageId"), raw)
    if isinstance(value, str):
        return Record(where, None, value)
    return Record(where, None, json.dumps(value, ensure_ascii=False))


def _line_record(where: str, line: bytes) -> Record:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        problem = f"not UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
        return Record(where, None, line, problem)
    try:
        return _unwrap(load_json(text, MAX_DEPTH + 1, None), where)
    except QuarantineError as exc:
        return Record(where, None, text, str(exc).replace("message body is ", ""))


def _parses_alone(line: bytes) -> bool:
    try:
        return isinstance(load_json(line.decode("utf-8"), MAX_DEPTH + 1, None), dict | list)
    except (QuarantineError, UnicodeDecodeError):
        return False


def _whole_document(path: Path, data: bytes) -> list[Record] | None:
    """The file as one JSON document (an envelope, an SQS message or a list of either), or None
    when it is not one."""
    try:
        value = load_json(data.decode("utf-8"), MAX_DEPTH + 2, None)
    except (QuarantineError, UnicodeDecodeError):
        return None
    items = value if isinstance(value, list) else [value]
    return [_unwrap(item, f"{path}:item {i}") for i, item in enumerate(items, 1)]


def _document_error(path: Path, data: bytes) -> ReplayFileError:
    """The one-line error for a file that is neither one JSON document nor JSON Lines."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        byte = data[exc.start]
        return ReplayFileError(f"{path}:{line}: not UTF-8 (byte 0x{byte:02x} at column {column})")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return ReplayFileError(
            f"{path}:{exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})"
        )
    except (ValueError, RecursionError):
        pass
    try:
        load_json(text, MAX_DEPTH + 2, None)
    except QuarantineError as exc:
        return ReplayFileError(f"{path}:1: {exc}")
    return ReplayFileError(f"{path}: not JSON or JSON Lines")


def read_records(path: Path) -> list[Record]:
    """Every message of ``path``: one JSON document, or JSON Lines (one message per line, bad
    lines kept with a notice so they are quarantined, not lost). Raises ReplayFileError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplayFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    if not data.strip():
        return []
    if path.suffix.lower() not in JSON_LINES_SUFFIXES:
        whole = _whole_document(path, data)
        if whole is not None:
            return whole
    lines = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    json_lines = path.suffix.lower() in JSON_LINES_SUFFIXES or (
        len(lines) > 1 and 2 * sum(_parses_alone(line) for _, line in lines) >= len(lines)
    )
    if not json_lines:
        raise _document_error(path, data)
    return [_line_record(f"{path}:{n}", line.rstrip(b"\r")) for n, line in lines]


# -- replaying --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReplaySite:
    """One institution, with its Canvas and warehouse resolved for use outside a run."""

    institution: Institution
    canvas: CanvasResource
    warehouse: WarehouseResource


@dataclass(frozen=True)
class ReplayTarget:
    """Every institution the code location serves, and the shared schema of a vendor's shared
    queue (None for a single institution)."""

    sites: list[ReplaySite]
    shared: WarehouseResource | None = None

    def destinations(self) -> land.Destinations:
        if self.shared is None:
            return land.Destinations.one_institution(self.sites[0].warehouse.table_schema())
        by_uuid = {
            site.institution.root_account_uuid: site.warehouse.table_schema()
            for site in self.sites
            if site.institution.root_account_uuid
        }
        return land.Destinations(by_uuid=by_uuid, stray=self.shared.table_schema())


def resources(settings: Settings) -> ReplayTarget:
    """The institutions' resources, with their secrets resolved for use outside a run."""
    if settings.institutions_file is None:
        credentials = settings.canvas_token_configured or settings.canvas_refresh_token_configured
        for name, present in (
            (CANVAS_BASE_URL_ENV, settings.canvas_configured),
            (f"{CANVAS_API_TOKEN_ENV} (or a developer key)", credentials),
        ):
            if not present:
                raise SettingError(f"{name} is not set; replay needs Canvas and the warehouse.")
    sites = []
    for institution in settings.institutions:
        warehouse = ready(warehouse_resource(settings, institution.schema_name))
        canvas = ready(canvas_resource(settings, institution, warehouse))
        sites.append(ReplaySite(institution, canvas, warehouse))
    shared = None
    if settings.institutions_file is not None:
        shared = warehouse_resource(settings, settings.shared_schema, SHARED)
        shared = shared.process_config_and_initialize()
    return ReplayTarget(sites, shared)


def _land(
    conn: psycopg.Connection,
    destinations: land.Destinations,
    records: list[Record],
    progress: tqdm,
) -> list[land.Outcome]:
    outcomes: list[land.Outcome] = []
    for start in range(0, len(records), CHUNK):
        chunk = records[start : start + CHUNK]
        result = land.land_messages(conn, destinations, [(r.message_id, r.body) for r in chunk])
        outcomes.extend(result.outcomes)
        progress.update(len(chunk))
    return outcomes


def _route_and_apply(site: ReplaySite, report: ReplayReport) -> int:
    """Route and apply what the institution has landed, in rounds while routing makes progress
    (each round's Canvas look-ups are bounded); returns how many events the applies closed
    (earlier ones included). Canvas failures leave events pending, with a notice."""
    schema, closed = site.warehouse.table_schema(), 0
    with site.warehouse.connect() as conn:
        imported = imported_semesters(conn, schema)
    with site.canvas.session() as session:
        for _ in range(ROUTING_ROUNDS):
            done = apply_institution(
                site.warehouse.connect, schema, session,
                site.institution.target_semesters, imported,
            )  # fmt: skip
            closed += sum(s.result.applied + s.result.stale for s in done.semesters if s.result)
            routed = done.routed
            if not routed.unresolved or not (routed.routed + routed.skipped + routed.out_of_target):
                break
    if done.failure():
        report.notices.append(f"{site.institution.label}: {done.failure()}; events stay pending")
    return closed


_APPLIED = {"applied", "stale"}


def _account(
    conn: psycopg.Connection,
    records: list[Record],
    outcomes: list[land.Outcome],
    report: ReplayReport,
) -> int:
    """Add each record's fate to ``report``; returns how many of them the applies closed."""
    fate: dict[str, str] = {}
    for schema in {o.schema for o in outcomes if o.schema}:
        keys = [o.event_key for o in outcomes if o.schema == schema and o.event_key]
        fate.update(event_outcomes(conn, schema, keys))
    applied_here = 0
    for record, outcome in zip(records, outcomes, strict=True):
        if outcome.kind == land.DUPLICATE:
            report.duplicate += 1
        elif outcome.kind in (land.QUARANTINED, land.ALREADY_QUARANTINED):
            report.quarantined += 1
            report.already_quarantined += outcome.kind == land.ALREADY_QUARANTINED
        elif outcome.kind == land.LEFT_FOR_REDRIVE:
            report.not_stored += 1
        else:
            how = fate.get(outcome.event_key)
            if how is None:
                report.pending += 1
            elif how in _APPLIED:
                report.applied += 1
                applied_here += 1
            else:
                report.skipped += 1
        if record.problem:
            report.notices.append(f"{record.where}: {record.problem}; {outcome.kind}")
    return applied_here


def replay(paths: list[Path], target: ReplayTarget, *, err: TextIO | None = None) -> ReplayReport:
    """Land every file's messages, route and apply them; notices and file errors go to ``err``
    (stderr) as one line each."""
    err = err or sys.stderr
    report = ReplayReport()
    records: list[Record] = []
    for path in paths:
        try:
            records.extend(read_records(Path(path)))
        except ReplayFileError as exc:
            report.unreadable.append(str(exc))
            print(f"canvas-assets: {exc}; nothing replayed from it", file=err)
    report.read = len(records)
    for site in target.sites:  # the landing connection writes into each schema
        site.warehouse.migrate_once()
    landing = target.shared or target.sites[0].warehouse
    with landing.connect() as conn:
        with tqdm(
            total=len(records), unit="msg", desc="landing", file=err,
            disable=len(records) < PROGRESS_FROM or None,
        ) as progress:  # fmt: skip
            outcomes = _land(conn, target.destinations(), records, progress)
        closed = sum(_route_and_apply(site, report) for site in target.sites)
        report.earlier_applied = max(0, closed - _account(conn, records, outcomes, report))
    for notice in report.notices[:MAX_NOTICES]:
        print(f"canvas-assets: {notice}", file=err)
    if len(report.notices) > MAX_NOTICES:
        print(f"canvas-assets: … and {len(report.notices) - MAX_NOTICES} more", file=err)
    return report


def run_replay(paths: list[Path], settings: Settings, *, out: TextIO | None = None) -> int:
    """The command: replay ``paths``, print the report line; the exit code is 0 when every file
    was read and nothing is left pending or unstored, 1 otherwise, 2 when it could not start."""
    out = out or sys.stdout
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        print(f"canvas-assets: no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    try:
        report = replay(paths, resources(settings))
    except SettingError as exc:
        print(f"canvas-assets: {exc}", file=sys.stderr)
        return 2
    except (psycopg.Error, CanvasError, RuntimeError) as exc:  # the warehouse or Canvas is down
        print(f"canvas-assets: replay stopped: {first_line(exc)}", file=sys.stderr)
        return 2
    print(report.summary(), file=out)
    return 0 if not (report.unreadable or report.pending or report.not_stored) else 1
