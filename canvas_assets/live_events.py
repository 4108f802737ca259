"""Canvas Live Events: parse, land durably, route to semesters.

Delivery from Canvas is best-effort, unordered and at-least-once (standard SQS), so:

- every message is *landed* (committed to ``live_events``) before it is deleted from SQS; the
  landing key is a hash of the message body, so a redelivered message or a duplicate send is
  recognised and not landed twice;
- messages that cannot be understood go to ``live_event_quarantine`` with the reason and the raw
  text, and are deleted from the queue: bad input never stops the stream;
- routing gives each landed event the course it concerns and that course's semester; the apply
  run (``incremental.py``) then re-reads those courses from REST — events are signals, REST is
  truth.

Ids: Canvas sends global ids (shard × 10^13 + local id). Ids on the institution's own shard (the
shard of ``metadata.root_account_id``) are stored as the local ids REST returns; ids from other
shards stay global.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

SHARD_FACTOR = 10**13
MAX_ID = 2**63 - 1  # ids are stored as PostgreSQL bigint

# Event name → the body field holding the id of the object it concerns.
COURSE_EVENTS = {"course_created", "course_updated", "course_completed"}
SECTION_EVENTS = {"course_section_created", "course_section_updated"}
ENROLLMENT_EVENTS = {"enrollment_created", "enrollment_updated"}
ENROLLMENT_STATE_EVENTS = {"enrollment_state_created", "enrollment_state_updated"}
USER_EVENTS = {"user_created", "user_updated"}
GRADE_EVENTS = {"course_grade_change"}
SUPPORTED_EVENTS = (
    COURSE_EVENTS
    | SECTION_EVENTS
    | ENROLLMENT_EVENTS
    | ENROLLMENT_STATE_EVENTS
    | USER_EVENTS
    | GRADE_EVENTS
)

CALIPER_REASON = (
    "Caliper-format event: canvas-assets reads the Canvas format only. Set the Data Services "
    "stream's format to Canvas."
)


class QuarantineError(ValueError):
    """The message cannot be applied; the text is the quarantine reason."""


@dataclass(frozen=True)
class ParsedEvent:
    event_key: str
    event_name: str
    event_time: datetime
    supported: bool
    course_id: int | None = None
    section_id: int | None = None
    enrollment_id: int | None = None
    user_id: int | None = None
    envelope: dict = field(default_factory=dict, compare=False)


def event_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def parse_time(value: object, name: str) -> datetime:
    """Any ISO-8601 variant (Z, fractional seconds, any offset) or Canvas's "Y-m-d H:M:S -0800"."""
    if not isinstance(value, str) or not value.strip():
        raise QuarantineError(f"{name} is missing or not a timestamp string")
    try:
        stamp = pd.Timestamp(value.strip())
    except (ValueError, TypeError):
        raise QuarantineError(f"{name} {value!r} is not a timestamp") from None
    if stamp is pd.NaT:
        raise QuarantineError(f"{name} {value!r} is not a timestamp")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


def normalize_id(value: object, own_shard: int | None, name: str) -> int | None:
    """A Canvas id as stored: local for the institution's shard, global otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise QuarantineError(f"{name} must be an id string, got {type(value).__name__}")
    text = str(value).strip()
    # isdigit() alone accepts "²" and other digits int() refuses.
    if not (text.isascii() and text.isdigit()):
        raise QuarantineError(f"{name} {value!r} is not a Canvas id")
    number = int(text)
    if number > MAX_ID:
        raise QuarantineError(f"{name} {value!r} is larger than any Canvas id (bigint)")
    if number >= SHARD_FACTOR and own_shard is not None and number // SHARD_FACTOR == own_shard:
        return number % SHARD_FACTOR
    return number


def _own_shard(metadata: dict) -> int | None:
    root = metadata.get("root_account_id")
    if root is None or not str(root).isdigit():
        return None
    number = int(str(root))
    return number // SHARD_FACTOR if number >= SHARD_FACTOR else None


def parse_message(raw: str) -> ParsedEvent:
    """Parse one SQS message body (a Canvas-format envelope). Raises QuarantineError."""
    try:
        envelope = json.loads(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise QuarantineError(f"message body is not JSON ({exc})") from None
    if not isinstance(envelope, dict):
        raise QuarantineError("message body is not a JSON object")
    if "dataVersion" in envelope or ("sensor" in envelope and "data" in envelope):
        raise QuarantineError(CALIPER_REASON)
    metadata, body = envelope.get("metadata"), envelope.get("body")
    if not isinstance(metadata, dict) or not isinstance(body, dict):
        raise QuarantineError("envelope needs object fields 'metadata' and 'body'")
    name = metadata.get("event_name")
    if not isinstance(name, str) or not name:
        raise QuarantineError("metadata.event_name is missing")
    time_value = metadata.get("event_time") or body.get("updated_at")
    event_time = parse_time(time_value, "metadata.event_time")
    # Canonical JSON, so the same event replayed from a file matches its SQS copy.
    try:
        key = event_key(
            json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        )
    except UnicodeEncodeError:
        raise QuarantineError(
            "message holds text that is not valid Unicode (a lone surrogate)"
        ) from None

    if name not in SUPPORTED_EVENTS:
        return ParsedEvent(key, name, event_time, supported=False, envelope=envelope)

    shard = _own_shard(metadata)

    def ident(field_name: str, required: bool = False) -> int | None:
        value = normalize_id(body.get(field_name), shard, f"body.{field_name}")
        if required and value is None:
            raise QuarantineError(f"{name} without body.{field_name}")
        return value

    if name in COURSE_EVENTS:
        course_key = "course_id" if "course_id" in body else None
        if course_key is None and isinstance(body.get("course"), dict):  # course_completed shape
            course_id = normalize_id(body["course"].get("id"), shard, "body.course.id")
        else:
            course_id = ident("course_id", required=True)
        if course_id is None:
            raise QuarantineError(f"{name} without a course id")
        return ParsedEvent(key, name, event_time, True, course_id=course_id, envelope=envelope)
    if name in SECTION_EVENTS:
        return ParsedEvent(
            key,
            name,
            event_time,
            True,
            course_id=ident("course_id", required=True),
            section_id=ident("course_section_id", required=True),
            envelope=envelope,
        )
    if name in ENROLLMENT_EVENTS:
        return ParsedEvent(
            key,
            name,
            event_time,
            True,
            course_id=ident("course_id", required=True),
            section_id=ident("course_section_id"),
            enrollment_id=ident("enrollment_id", required=True),
            user_id=ident("user_id", required=True),
            envelope=envelope,
        )
    if name in ENROLLMENT_STATE_EVENTS:
        return ParsedEvent(
            key,
            name,
            event_time,
            True,
            enrollment_id=ident("enrollment_id", required=True),
            envelope=envelope,
        )
    if name in USER_EVENTS:
        return ParsedEvent(
            key, name, event_time, True, user_id=ident("user_id", required=True), envelope=envelope
        )
    # course_grade_change
    return ParsedEvent(
        key,
        name,
        event_time,
        True,
        course_id=ident("course_id", required=True),
        user_id=ident("user_id", required=True),
        envelope=envelope,
    )


@dataclass
class LandResult:
    landed: int = 0
    duplicates: int = 0
    quarantined: int = 0
    unknown: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "landed": self.landed,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "unknown": self.unknown,
        }


def land_messages(
    conn: psycopg.Connection, schema: str, messages: Iterable[tuple[str | None, str]]
) -> LandResult:
    """Durably store (message_id, raw body) pairs in one transaction.

    When this returns, every message is either landed, a known duplicate, or quarantined, so the
    caller may delete them from SQS.
    """
    result = LandResult()
    events = sql.SQL("{}.live_events").format(sql.Identifier(schema))
    quarantine = sql.SQL("{}.live_event_quarantine").format(sql.Identifier(schema))

    def quarantine_message(cur: psycopg.Cursor, message_id: str | None, raw: object, reason: str):
        text = raw if isinstance(raw, str) else repr(raw)
        # Keep what cannot be stored as UTF-8 (lone surrogates) visible as escapes.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        cur.execute(
            sql.SQL(
                "INSERT INTO {} (raw_key, message_id, reason, raw) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (raw_key) DO NOTHING"
            ).format(quarantine),
            # PostgreSQL text cannot hold NUL: keep it visible as an escape.
            (event_key(text), message_id, reason, text.replace("\x00", "\\u0000")),
        )
        result.quarantined += 1

    with conn.transaction(), conn.cursor() as cur:
        for message_id, raw in messages:
            try:
                event = parse_message(raw)
            except QuarantineError as exc:
                quarantine_message(cur, message_id, raw, str(exc))
                continue
            try:
                # A savepoint per message: one that PostgreSQL refuses (e.g. a NUL character
                # in a jsonb string) is quarantined instead of failing its whole batch.
                with conn.transaction():
                    _insert_event(cur, events, message_id, event)
            except psycopg.DataError as exc:
                reason = f"PostgreSQL could not store it: {str(exc).splitlines()[0]}"
                quarantine_message(cur, message_id, raw, reason)
                continue
            if cur.rowcount == 0:
                result.duplicates += 1
            elif event.supported:
                result.landed += 1
            else:
                result.unknown += 1
    return result


def _insert_event(
    cur: psycopg.Cursor, events: sql.Composable, message_id: str | None, event: ParsedEvent
) -> None:
    cur.execute(
        sql.SQL(
            "INSERT INTO {} (event_key, message_id, event_name, event_time, supported,"
            " course_id, section_id, enrollment_id, user_id, envelope, applied_at, outcome)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
            "  CASE WHEN %s THEN NULL ELSE now() END,"
            "  CASE WHEN %s THEN NULL ELSE 'unknown_event' END)"
            " ON CONFLICT (event_key) DO NOTHING"
        ).format(events),
        (
            event.event_key,
            message_id,
            event.event_name,
            event.event_time,
            event.supported,
            event.course_id,
            event.section_id,
            event.enrollment_id,
            event.user_id,
            Jsonb(event.envelope),
            event.supported,
            event.supported,
        ),
    )
