"""Which apply runs the Live Events sensor requests: pure decisions, no daemon needed."""

from canvas_assets.defs.sensors.live_events import (
    RETRY_WINDOW_SECONDS,
    InstitutionWork,
    plan_runs,
)

NOW = 1_800_000_000.0


def labels(plan) -> list[list[str]]:
    return [
        r.run_config["ops"]["apply_live_events"]["config"]["institutions"] for r in plan.requests
    ]


def test_healthy_institutions_with_work_share_one_short_run() -> None:
    """Without this, every institution with events would cost a run launch of its own on each
    tick, and a vendor's deployment could not keep up at fifty institutions."""
    work = [
        InstitutionWork("north", 42, failing=False),
        InstitutionWork("south", 7, failing=False),
        InstitutionWork("east", None, failing=False),  # nothing to apply
    ]
    plan = plan_runs(work, set(), NOW)
    assert labels(plan) == [["north", "south"]]
    assert plan.requests[0].tags["dagster/max_retries"] == "2"  # Dagster retries it


def test_the_same_events_give_the_same_run_key_and_new_events_a_new_one() -> None:
    """Without this, two ticks finding the same events would launch two runs, or new events
    would wait for a window to pass."""
    work = [InstitutionWork("north", 42, failing=False)]
    first, again = plan_runs(work, set(), NOW), plan_runs(work, set(), NOW + 5)
    assert first.requests[0].run_key == again.requests[0].run_key
    newer = plan_runs([InstitutionWork("north", 43, failing=False)], set(), NOW + 5)
    assert newer.requests[0].run_key != first.requests[0].run_key


def test_work_left_over_is_tried_again_in_the_next_window() -> None:
    """Without this, events a run could not apply (Canvas could not route them) would wait
    until another event happened to arrive."""
    work = [InstitutionWork("north", 42, failing=False)]
    first = plan_runs(work, set(), NOW)
    later = plan_runs(work, set(), NOW + RETRY_WINDOW_SECONDS)
    assert first.requests[0].run_key != later.requests[0].run_key


def test_an_institution_being_applied_gets_no_second_run() -> None:
    """Without this, runs would pile up behind a slow institution's run."""
    work = [InstitutionWork("north", 42, failing=False), InstitutionWork("south", 7, False)]
    plan = plan_runs(work, {"north"}, NOW)
    assert labels(plan) == [["south"]]
    assert plan.in_flight == ["north"]


def test_a_failing_institution_gets_runs_of_its_own_and_never_fails_the_others() -> None:
    """Without this, an institution whose Canvas is down would fail every batch it is in, and
    the healthy institutions with it."""
    work = [
        InstitutionWork("north", 42, failing=True),
        InstitutionWork("south", 7, failing=False),
        InstitutionWork("west", 9, failing=True),
    ]
    plan = plan_runs(work, set(), NOW)
    assert labels(plan) == [["south"], ["north"], ["west"]]
    alone = plan.requests[1]
    assert "dagster/max_retries" not in alone.tags  # tried once per window or new event
    same_window = plan_runs(work, set(), NOW + 60)
    assert same_window.requests[1].run_key == alone.run_key
