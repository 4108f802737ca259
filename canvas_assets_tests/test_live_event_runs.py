"""Which apply runs the Live Events sensor requests: pure decisions, no daemon needed."""

from canvas_assets.defs.sensors.live_events import ApplyRun, live_event_run_requests, retry_delay
from canvas_assets.settings import Settings

SETTINGS = Settings()

NOW = 1_800_000_000.0


def keys(requests) -> list[str]:
    return [r.run_key for r in requests]


def test_first_request_names_the_newest_pending_event() -> None:
    """Without this, two ticks finding the same events would launch two apply runs."""
    assert keys(live_event_run_requests(SETTINGS, {"2026FA": 42, "2026SP": 7}, {}, NOW)) == [
        "live-events:2026FA:42",
        "live-events:2026SP:7",
    ]


def test_no_second_run_while_one_for_the_semester_is_in_flight() -> None:
    """Without this, two applies of one semester would run at once when new events arrive."""
    in_flight = ApplyRun("live-events:2026FA:42", finished=False, failed=False)
    runs = {"2026FA": [in_flight]}
    assert keys(live_event_run_requests(SETTINGS, {"2026FA": 50, "2026SP": 7}, runs, NOW)) == [
        "live-events:2026SP:7"
    ]


def test_failed_run_is_retried_under_a_new_key_with_growing_delays() -> None:
    """Without this, a failed apply's run key, never reused by Dagster, would strand its
    events; retrying at once would hammer a Canvas that is down."""
    failed = ApplyRun("live-events:2026FA:42", finished=True, failed=True, end_time=NOW - 10)
    assert live_event_run_requests(SETTINGS, {"2026FA": 42}, {"2026FA": [failed]}, NOW) == []
    later = NOW - 10 + retry_delay(1)
    assert keys(live_event_run_requests(SETTINGS, {"2026FA": 42}, {"2026FA": [failed]}, later)) == [
        "live-events:2026FA:42:retry-1"
    ]
    failed_again = ApplyRun(
        "live-events:2026FA:42:retry-1", finished=True, failed=True, end_time=later
    )
    history = {"2026FA": [failed_again, failed]}
    assert live_event_run_requests(SETTINGS, {"2026FA": 42}, history, later + retry_delay(1)) == []
    assert keys(
        live_event_run_requests(SETTINGS, {"2026FA": 42}, history, later + retry_delay(2))
    ) == ["live-events:2026FA:42:retry-2"]
    assert retry_delay(1) < retry_delay(2) < retry_delay(50) == retry_delay(60)


def test_new_events_after_a_failure_get_a_run_at_once() -> None:
    """Without this, events arriving after a failed run would wait out the failed run's delay
    even though their own run key is new."""
    failed = ApplyRun("live-events:2026FA:42", finished=True, failed=True, end_time=NOW)
    assert keys(live_event_run_requests(SETTINGS, {"2026FA": 43}, {"2026FA": [failed]}, NOW)) == [
        "live-events:2026FA:43"
    ]


def test_retry_keys_stay_new_beyond_the_runs_the_sensor_looks_at() -> None:
    """Without this, once more failed attempts existed than the sensor reads back, it would
    request an already used run key, which Dagster silently skips, stranding the events."""
    base = "live-events:2026FA:42"
    history = [
        ApplyRun(f"{base}:retry-{n}", finished=True, failed=True, end_time=NOW - 7200)
        for n in range(30, 10, -1)  # the 20 newest of 31 attempts, newest first
    ]
    assert keys(live_event_run_requests(SETTINGS, {"2026FA": 42}, {"2026FA": history}, NOW)) == [
        f"{base}:retry-31"
    ]


def test_a_run_stuck_unfinished_for_hours_stops_blocking_its_semester() -> None:
    """Without this, a run whose worker died unnoticed would hold back every later apply of
    its semester forever."""
    stuck = ApplyRun("live-events:2026FA:42", finished=False, failed=False, created_at=NOW - 86400)
    recent = ApplyRun("live-events:2026FA:42", finished=False, failed=False, created_at=NOW - 60)
    assert keys(live_event_run_requests(SETTINGS, {"2026FA": 50}, {"2026FA": [stuck]}, NOW)) == [
        "live-events:2026FA:50"
    ]
    assert live_event_run_requests(SETTINGS, {"2026FA": 50}, {"2026FA": [recent]}, NOW) == []
