"""Parsing Canvas Live Events: ids, timestamps, formats, and what gets quarantined."""

import json
from datetime import UTC, datetime

import pytest

from canvas_assets.live_events.parse import CALIPER_REASON, QuarantineError, parse_message

ROOT = "21070000000000001"


def message(event_name: str, body: dict, event_time: str = "2026-09-01T12:00:00.218Z") -> str:
    metadata = {"event_name": event_name, "event_time": event_time, "root_account_id": ROOT}
    return json.dumps({"metadata": metadata, "body": body})


def test_own_shard_global_ids_become_rest_local_ids() -> None:
    """Without this, events and backfills would write the same course under two ids."""
    event = parse_message(
        message(
            "enrollment_updated",
            {
                "enrollment_id": "21070000000100001",
                "course_id": "21070000000000565",
                "user_id": "5001",  # some events mix local ids in
                "course_section_id": "21070000000001001",
            },
        )
    )
    assert (event.enrollment_id, event.course_id, event.user_id, event.section_id) == (
        100001,
        565,
        5001,
        1001,
    )


def test_other_shard_ids_stay_global() -> None:
    """Without this, a user from another shard would collide with a local user id."""
    event = parse_message(message("user_updated", {"user_id": "30010000000000042"}))
    assert event.user_id == 30010000000000042


@pytest.mark.parametrize(
    "stamp",
    [
        "2026-09-01T12:00:00.218Z",
        "2026-09-01T12:00:00Z",
        "2026-09-01 05:00:00 -0700",
        "2026-09-01T14:00:00+02:00",
    ],
)
def test_every_canvas_timestamp_format_parses_to_utc(stamp: str) -> None:
    """Without this, events in Canvas's other time formats would be quarantined or misordered."""
    event = parse_message(message("course_updated", {"course_id": "1"}, stamp))
    assert event.event_time.replace(microsecond=0) == datetime(2026, 9, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("{not json", "not JSON"),
        (json.dumps([1, 2]), "not a JSON object"),
        (json.dumps({"body": {}}), "'metadata' and 'body'"),
        (
            json.dumps({"metadata": {"event_time": "2026-01-01T00:00:00Z"}, "body": {}}),
            "event_name",
        ),
        (message("course_updated", {"course_id": {"id": 1}}), "must be an id string"),
        (message("course_updated", {"course_id": "abc"}), "is not a Canvas id"),
        (message("course_updated", {"name": "no id"}), "without body.course_id"),
        (message("course_updated", {"course_id": "1"}, "yesterday-ish"), "not a timestamp"),
        (
            json.dumps(
                {
                    "sensor": "https://x",
                    "sendTime": "2026-01-01T00:00:00Z",
                    "dataVersion": "http://purl.imsglobal.org/ctx/caliper/v1p1",
                    "data": [],
                }
            ),
            CALIPER_REASON,
        ),
    ],
)
def test_bad_messages_are_quarantined_with_a_reason(raw: str, reason: str) -> None:
    """Without this, one malformed message would crash the sensor and stall the stream."""
    with pytest.raises(QuarantineError) as info:
        parse_message(raw)
    assert reason in str(info.value)


def test_unknown_event_types_are_accepted_but_marked_unsupported() -> None:
    """Without this, subscribing to extra event types in Canvas would break ingestion."""
    event = parse_message(message("discussion_entry_created", {"discussion_entry_id": "9"}))
    assert not event.supported and event.event_name == "discussion_entry_created"


def test_same_event_reserialized_has_the_same_key() -> None:
    """Without this, replaying an archived event would apply it a second time."""
    raw = message("course_updated", {"course_id": "21070000000000565", "name": "Física"})
    compact = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False)
    assert parse_message(raw).event_key == parse_message(compact).event_key
