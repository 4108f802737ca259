"""The local tools that show alerts working: the dev stack's alert receiver (``--alerts``) and
the sandbox's outage (``POST /_sandbox/outage``, ``--outage-after``)."""

import contextlib
import time

import requests

from canvas_devstack.alert_receiver import start_alert_receiver

from .conftest import SANDBOX_TOKEN


def test_the_dev_alert_receiver_prints_each_alert_in_a_line(capsys) -> None:
    """Without this, `canvas-assets dev --alerts` would send alerts somewhere nobody looks."""
    alert = {
        "institution": "north", "semester": "2026SP", "kind": "backfill", "status": "failed",
        "summary": "north: backfill of semester 2026SP failed", "details": "Canvas said no",
        "url": "http://127.0.0.1:3000/runs/abc",
    }  # fmt: skip
    with contextlib.ExitStack() as stack:
        url = start_alert_receiver(stack)
        assert requests.post(url, json=alert, timeout=5).status_code == 204
    assert capsys.readouterr().out.splitlines() == [
        "ALERT FAILED [north/2026SP, backfill] | north: backfill of semester 2026SP failed | "
        "Canvas said no | http://127.0.0.1:3000/runs/abc"
    ]


def test_a_sandbox_outage_fails_every_request_for_its_time_then_ends(sandbox) -> None:
    """Without this, the dev stack's outage (the way to see an alert and its recovery) could
    fail nothing, or never end."""
    courses = f"{sandbox.url}/api/v1/courses/1"
    auth = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    assert requests.post(f"{sandbox.url}/_sandbox/outage?seconds=0.3", timeout=5).ok
    assert requests.get(courses, headers=auth, timeout=5).status_code == 503
    time.sleep(0.4)
    assert requests.get(courses, headers=auth, timeout=5).status_code != 503
    assert sandbox.faults.counts["outage"] == 1
