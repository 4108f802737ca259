"""Parse one SQS message body (a Canvas-format Live Event) into what landing needs.

Which objects an event concerns is a table (``EVENT_IDS``): event name → the body fields that hold
its course, section, enrollment and user ids. Adding an event type is one entry there.

Ids: Canvas sends global ids (shard × 10^13 + local id). Ids on the institution's own shard (the
shard of ``metadata.root_account_id``) are stored as the local ids REST returns; ids from other
shards stay global. Anything that cannot be understood raises ``QuarantineError`` with a reason.

Every byte is untrusted: size and nesting are checked before decoding, numbers must be finite,
ids are ASCII digits within bigint, timestamps are ISO-8601 (or Canvas's Ruby form) within
``EVENT_TIME_RANGE``, and text PostgreSQL cannot store (NUL, lone surrogates) is refused here.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

SHARD_FACTOR = 10**13
MAX_ID = 2**63 - 1  # ids are stored as PostgreSQL bigint
# Canvas drops events over 1 MB; SQS messages are at most 256 KiB (1 MiB with extended clients).
MAX_MESSAGE_BYTES = 1024 * 1024
# A Canvas envelope nests 3-4 levels; this leaves room for bodies with small objects and stays
# far below the recursion limits of json and PostgreSQL's jsonb.
MAX_DEPTH = 32
# Canvas exists since 2011: anything outside this is a corrupt or hostile stamp, and one far in
# the future could never be judged stale.
EVENT_TIME_RANGE = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
EVENT_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)
# A root account's uuid: Canvas's are 40 random letters and digits.
ACCOUNT_UUID = re.compile(r"[A-Za-z0-9_-]{1,128}", re.ASCII)

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
    # metadata.root_account_uuid: which institution sent it (a shared queue routes by it).
    root_account_uuid: str | None = None
    envelope: dict = field(default_factory=dict, compare=False)


def event_key(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "backslashreplace")).hexdigest()


def shown(value: object, limit: int = 60) -> str:
    """``repr`` of an untrusted value, short enough for a reason or a log line."""
    text = repr(value) if not isinstance(value, (dict, list)) else f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


# ISO-8601 extended calendar dates with an optional time and offset, and Ruby's Time#to_s
# ("2019-11-05 07:38:00 -0800"), which Canvas also sends. ASCII digits only.
_ISO_TIME = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[T ](?P<time>\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?)"
    r" ?(?P<zone>Z|[+-]\d{2}(?::?\d{2})?)?)?",
    re.ASCII,
)


def parse_time(value: object, name: str) -> datetime:
    """An ISO-8601 timestamp (Z, fractional seconds, any offset) or Canvas's "Y-m-d H:M:S -0800",
    in UTC and within ``EVENT_TIME_RANGE``. Words ("now", "today"), bare times and other date
    orders are refused: an event stamped with the landing time could never be judged stale."""
    if not isinstance(value, str) or not value.strip():
        raise QuarantineError(f"{name} is missing or not a timestamp string")
    match = _ISO_TIME.fullmatch(value.strip()) if len(value) <= 64 else None
    if match is None:
        raise QuarantineError(f"{name} {shown(value)} is not a timestamp (ISO-8601 expected)")
    date, time_of_day, zone = match.group("date", "time", "zone")
    text = date + (f"T{time_of_day.replace(',', '.')}{zone or ''}" if time_of_day else "")
    try:
        stamp = datetime.fromisoformat(text)
        stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
    except (ValueError, OverflowError):  # month 13, hour 25, year 0 after the offset, ...
        raise QuarantineError(f"{name} {shown(value)} is not a valid timestamp") from None
    low, high = EVENT_TIME_RANGE
    if not low <= stamp < high:
        raise QuarantineError(
            f"{name} {shown(value)} is outside {low.year}-{high.year - 1}: not a real event time"
        )
    return stamp


def normalize_id(value: object, own_shard: int | None, name: str) -> int | None:
    """A Canvas id as stored: local for the institution's shard, global otherwise."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise QuarantineError(f"{name} must be an id string, got {type(value).__name__}")
    if isinstance(value, int):
        number = value
    else:
        text = value.strip()
        # isdigit() alone accepts "²" or "①", which int() refuses; the length check keeps
        # int() away from its 4,300-digit limit.
        if not (text.isascii() and text.isdigit()):
            raise QuarantineError(f"{name} {shown(value)} is not a Canvas id")
        if len(text) > len(str(MAX_ID)):
            raise QuarantineError(f"{name} {shown(value)} is larger than any Canvas id (bigint)")
        number = int(text)
    if number < 0:
        raise QuarantineError(f"{name} {shown(value)} is not a Canvas id")
    if number > MAX_ID:
        raise QuarantineError(f"{name} {shown(value)} is larger than any Canvas id (bigint)")
    if number >= SHARD_FACTOR and own_shard is not None and number // SHARD_FACTOR == own_shard:
        return number % SHARD_FACTOR
    return number


def _own_shard(metadata: dict) -> int | None:
    root = normalize_id(metadata.get("root_account_id"), None, "metadata.root_account_id")
    if root is None:
        return None
    return root // SHARD_FACTOR if root >= SHARD_FACTOR else None


# "\u0000" after an even number of backslashes: an escaped NUL, not the text "\u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_STRUCTURE = re.compile(r'[\[\]{}"\\]')


def nesting_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text`` (ignoring brackets inside strings),
    read in one linear pass over the structural characters only."""
    depth = deepest = 0
    in_string = False
    escaped_at = -1
    for match in _STRUCTURE.finditer(text):
        char, at = match.group(), match.start()
        if at == escaped_at:
            continue
        if char == "\\":
            escaped_at = at + 1
        elif char == '"':
            in_string = not in_string
        elif not in_string:
            depth += 1 if char in "[{" else -1
            deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is too large for a number")
    return number


def load_json(
    text: str, max_depth: int = MAX_DEPTH, max_bytes: int | None = MAX_MESSAGE_BYTES
) -> object:
    """Decode untrusted JSON: size and nesting are checked before decoding (deep nesting would
    exhaust the decoder's recursion), NaN/Infinity and numbers json cannot convert are refused.
    Raises QuarantineError with a reason."""
    if max_bytes is not None and len(text) * 4 > max_bytes:  # cheap bound, exact check below
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise QuarantineError(f"message is {size:,} bytes, over the {max_bytes:,}-byte limit")
    if text.count("[") + text.count("{") > max_depth and nesting_depth(text) > max_depth:
        raise QuarantineError(f"message nests deeper than {max_depth} levels")
    try:
        return json.loads(text, parse_constant=_refuse_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise QuarantineError(f"message body is not JSON ({exc})") from None
    except RecursionError:  # belt and braces: the depth check above should prevent it
        raise QuarantineError(f"message nests deeper than {max_depth} levels") from None
    except ValueError as exc:  # a 4,301-digit integer, 1e999, NaN
        raise QuarantineError(f"message body holds an unusable number ({exc})") from None


def decode_body(raw: str | bytes) -> str:
    """The message as text; bytes must be UTF-8."""
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise QuarantineError(
            f"message is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def _envelope(raw: str) -> tuple[dict, dict, dict]:
    """The decoded envelope with its ``metadata`` and ``body`` objects."""
    envelope = load_json(raw)
    if not isinstance(envelope, dict):
        raise QuarantineError("message body is not a JSON object")
    if "dataVersion" in envelope or ("sensor" in envelope and "data" in envelope):
        raise QuarantineError(CALIPER_REASON)
    metadata, body = envelope.get("metadata"), envelope.get("body")
    if not isinstance(metadata, dict) or not isinstance(body, dict):
        raise QuarantineError("envelope needs object fields 'metadata' and 'body'")
    return envelope, metadata, body


def _canonical_key(envelope: dict) -> str:
    """Key of the canonical JSON, so the same event replayed from a file matches its SQS copy.
    Refuses text PostgreSQL cannot store in jsonb."""
    canonical = json.dumps(envelope, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if _NUL_ESCAPE.search(canonical):  # json escapes NUL this way even with ensure_ascii=False
        raise QuarantineError(
            "PostgreSQL could not store it: the message holds a NUL character (\\u0000)"
        )
    try:
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()
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


def _account_uuid(metadata: dict) -> str | None:
    value = metadata.get("root_account_uuid")
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not ACCOUNT_UUID.fullmatch(value):
        raise QuarantineError(f"metadata.root_account_uuid {shown(value)} is not an account uuid")
    return value


def claimed_account_uuid(raw: str | bytes) -> str | None:
    """The root account uuid a message names, if it is readable at all: which institution a
    message that cannot be parsed belongs to. Never raises."""
    try:
        _, metadata, _ = _envelope(decode_body(raw))
        return _account_uuid(metadata)
    except Exception:  # anything unreadable names no institution
        return None


def parse_message(raw: str | bytes) -> ParsedEvent:
    """Parse one SQS message body (a Canvas-format envelope). Raises QuarantineError."""
    envelope, metadata, body = _envelope(decode_body(raw))
    account_uuid = _account_uuid(metadata)
    name = metadata.get("event_name")
    if not isinstance(name, str) or not name:
        raise QuarantineError("metadata.event_name is missing")
    if not EVENT_NAME.fullmatch(name):
        raise QuarantineError(f"metadata.event_name {shown(name)} is not an event name")
    event_time = parse_time(
        metadata.get("event_time") or body.get("updated_at"), "metadata.event_time"
    )
    key = _canonical_key(envelope)
    if name not in EVENT_IDS:
        return ParsedEvent(
            key, name, event_time, False, root_account_uuid=account_uuid, envelope=envelope
        )
    ids = _ids(name, body, _own_shard(metadata))
    return ParsedEvent(
        key, name, event_time, True, root_account_uuid=account_uuid, envelope=envelope, **ids
    )
