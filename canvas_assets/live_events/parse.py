"""Parse one SQS message body (a Canvas-format Live Event) into what landing needs.

Which objects an event concerns is a table (``EVENT_IDS``): event name → the body fields that hold
its course, section, enrollment and user ids. Adding an event type is one entry there.

Ids: Canvas sends global ids (shard × 10^13 + local id). Ids on the institution's own shard (the
shard of ``metadata.root_account_id``) are stored as the local ids REST returns; ids from other
shards stay global. Anything that cannot be understood raises ``QuarantineError`` with a reason.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

SHARD_FACTOR = 10**13
MAX_ID = 2**63 - 1  # ids are stored as PostgreSQL bigint

CALIPER_REASON = (
    "Caliper-format event: canvas-assets reads the Canvas format only. Set the Data Services "
    "stream's format to Canvas."
)


@dataclass(frozen=True)
class IdField:
    """Where an event's body holds one id: the first of ``paths`` present ("course.id" reads
    ``body["course"]["id"]``)."""

    paths: tuple[str, ...]
    required: bool = True


def _course(*paths: str) -> dict[str, IdField]:
    return {"course_id": IdField(paths or ("course_id",))}


# Event name → ParsedEvent id attribute → where the body holds it.
EVENT_IDS: dict[str, dict[str, IdField]] = {
    "course_created": _course(),
    "course_updated": _course(),
    # course_completed carries the course as an object.
    "course_completed": _course("course_id", "course.id"),
    "course_section_created": {**_course(), "section_id": IdField(("course_section_id",))},
    "course_section_updated": {**_course(), "section_id": IdField(("course_section_id",))},
    "enrollment_created": {
        **_course(),
        "section_id": IdField(("course_section_id",), required=False),
        "enrollment_id": IdField(("enrollment_id",)),
        "user_id": IdField(("user_id",)),
    },
    "enrollment_state_created": {"enrollment_id": IdField(("enrollment_id",))},
    "user_created": {"user_id": IdField(("user_id",))},
    "course_grade_change": {**_course(), "user_id": IdField(("user_id",))},
}
EVENT_IDS["enrollment_updated"] = EVENT_IDS["enrollment_created"]
EVENT_IDS["enrollment_state_updated"] = EVENT_IDS["enrollment_state_created"]
EVENT_IDS["user_updated"] = EVENT_IDS["user_created"]


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


def _envelope(raw: str) -> tuple[dict, dict, dict]:
    """The decoded envelope with its ``metadata`` and ``body`` objects."""
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
    return envelope, metadata, body


def _canonical_key(envelope: dict) -> str:
    """Key of the canonical JSON, so the same event replayed from a file matches its SQS copy."""
    try:
        return event_key(
            json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        )
    except UnicodeEncodeError:
        raise QuarantineError(
            "message holds text that is not valid Unicode (a lone surrogate)"
        ) from None


def _body_value(body: dict, path: str) -> object:
    value: object = body
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _ids(name: str, body: dict, shard: int | None) -> dict[str, int | None]:
    """The event's ids, read where ``EVENT_IDS`` says; a missing required id quarantines."""
    ids: dict[str, int | None] = {}
    for attribute, spec in EVENT_IDS[name].items():
        path = next((p for p in spec.paths if _body_value(body, p) is not None), spec.paths[0])
        ids[attribute] = normalize_id(_body_value(body, path), shard, f"body.{path}")
        if spec.required and ids[attribute] is None:
            raise QuarantineError(f"{name} without body.{spec.paths[0]}")
    return ids


def parse_message(raw: str) -> ParsedEvent:
    """Parse one SQS message body (a Canvas-format envelope). Raises QuarantineError."""
    envelope, metadata, body = _envelope(raw)
    name = metadata.get("event_name")
    if not isinstance(name, str) or not name:
        raise QuarantineError("metadata.event_name is missing")
    event_time = parse_time(
        metadata.get("event_time") or body.get("updated_at"), "metadata.event_time"
    )
    key = _canonical_key(envelope)
    if name not in EVENT_IDS:
        return ParsedEvent(key, name, event_time, supported=False, envelope=envelope)
    ids = _ids(name, body, _own_shard(metadata))
    return ParsedEvent(key, name, event_time, True, envelope=envelope, **ids)
