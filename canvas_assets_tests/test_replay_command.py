"""`canvas-assets events replay`: counts that add up per line, one-line notices and errors
naming file and line, "already quarantined" on a second replay, a progress bar on big files."""

from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from psycopg import sql

from canvas_assets.commands.replay import PROGRESS_FROM, ReplayFileError, read_records, run_replay
from canvas_assets.settings import Settings
from canvas_sandbox import envelope, global_id

from .backfills import backfill, real_semesters
from .conftest import SANDBOX_TOKEN
from .hostile import ISSUE_BODIES
from .truth import expected_semester


@pytest.fixture
def replay_env(monkeypatch, sandbox, warehouse) -> Settings:
    monkeypatch.setenv("CANVAS_BASE_URL", sandbox.url)
    monkeypatch.setenv("CANVAS_API_TOKEN", SANDBOX_TOKEN)
    monkeypatch.setenv("CANVAS_WAREHOUSE_URL", warehouse.url)
    monkeypatch.setenv("CANVAS_WAREHOUSE_SCHEMA", warehouse.schema_name)
    return Settings.from_env()


def _rename(institution, course_id: int, name: str) -> dict:
    with institution.lock:
        institution.courses[course_id]["name"] = name
    return envelope(
        institution,
        "course_updated",
        {"course_id": str(global_id(course_id)), "name": name},
        event_time=datetime.now(UTC) + timedelta(seconds=2),
    )


def _adds_up(line: str) -> bool:
    """The counts of "read N: applied a, duplicate d, … (k already …)" add up to N."""
    read, counts = line.split(": ", 1)
    parts = re.sub(r"\([^)]*\)", "", counts)
    return sum(int(n) for n in re.findall(r"\d+", parts)) == int(read.removeprefix("read "))


def test_replay_counts_each_line_once_and_names_bad_lines_without_a_traceback(
    canvas, warehouse, db, institution, instance, tmp_path, replay_env, capsys
) -> None:
    """Without this, a dead-letter file holding what issue 11 found (a first line `[1, 2]` or
    `[broken`, a MessageId with NUL or that is an object, invalid UTF-8, deep nesting, a bad
    root_account_id) stops replay with a traceback and replays nothing, and the counts it
    prints do not add up to the lines read."""
    imported, other = real_semesters(institution)[:2]
    assert backfill(canvas, warehouse, instance, imported).success
    first, second = list(expected_semester(institution, imported)["courses"])[:2]
    elsewhere = next(iter(expected_semester(institution, other)["courses"]))
    renamed = _rename(institution, first, "Replayed once")
    lines: list[bytes] = [
        b"[1, 2]",
        b"[broken",
        json.dumps(renamed).encode(),
        json.dumps({"MessageId": "m\u0000x", "Body": json.dumps(renamed)}).encode(),
        json.dumps(
            {
                "MessageId": {"not": "a string"},
                "Body": json.dumps(_rename(institution, second, "Too")),
            }
        ).encode(),
        b'{"metadata": "\xff\xfe not utf-8"}',
        ("[" * 2000 + "]" * 2000).encode(),
        ISSUE_BODIES["unicode digit root_account_id"].encode(),
        json.dumps(
            envelope(institution, "asset_accessed", {"asset_id": "1"}, event_time=datetime.now(UTC))
        ).encode(),
        json.dumps(_rename(institution, elsewhere, "Not imported yet")).encode(),
    ]
    archive = tmp_path / "dead-letters.jsonl"
    archive.write_bytes(b"\n".join(lines))

    assert run_replay([archive], replay_env) == 1  # one event waits for its semester's import
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and _adds_up(out.strip())
    assert out.strip() == (
        "read 10: applied 2, duplicate 1, skipped 1, quarantined 5, still pending 1"
    )
    for line in (2, 6, 7):  # bad JSON, bad encoding, too deep: named by file and line
        assert re.search(rf"{re.escape(str(archive))}:{line}: .*; quarantined", err), err
    names = dict(
        db.execute(
            sql.SQL("SELECT institution_id, name FROM {}.courses WHERE semester = %s").format(
                sql.Identifier(warehouse.table_schema())
            ),
            (imported,),
        ).fetchall()
    )
    assert (names[first], names[second]) == ("Replayed once", "Too")

    assert run_replay([archive], replay_env) == 0
    again = capsys.readouterr().out.strip()
    assert again == (
        "read 10: applied 0, duplicate 5, skipped 0, quarantined 5 (5 already quarantined)"
    )
    assert _adds_up(again)


def test_a_file_that_is_neither_json_nor_json_lines_gets_a_one_line_error(
    warehouse, tmp_path, replay_env, capsys
) -> None:
    """Without this, one broken archive among several stops the whole replay with a raw
    JSONDecodeError traceback and none of the good files is replayed."""
    broken = tmp_path / "archive.json"
    broken.write_text('[\n  {"metadata": {},\n   "body": {}\n  },\n  {"metadata": oops}\n]\n')
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"metadata": {"event_name": "x"}, "body": {}}]))
    assert run_replay([broken, good], replay_env) == 1
    out, err = capsys.readouterr()
    assert err.strip().splitlines() == [
        f"canvas-assets: {broken}:5: not valid JSON (Expecting value, column 16); "
        "nothing replayed from it"
    ]
    assert out.strip() == "read 1: applied 0, duplicate 0, skipped 0, quarantined 1"


def test_reading_any_file_gives_records_or_one_file_error(tmp_path) -> None:
    """Without this, a file with invalid UTF-8 or deep nesting in its only document raises
    UnicodeDecodeError or RecursionError instead of a message naming the file and line."""
    cases = {
        "bad.json": b'{"a": "\xff"}',
        "deep.json": b"[" * 3000 + b"]" * 3000,
        "many.jsonl": b'{"a": 1}\n\xff\xfe\n[' + b"[" * 3000 + b"\n",
    }
    outcomes = {}
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            outcomes[name] = [r.problem for r in read_records(path)]
        except ReplayFileError as exc:
            outcomes[name] = str(exc)
    assert outcomes["bad.json"] == f"{tmp_path / 'bad.json'}:1: not UTF-8 (byte 0xff at column 8)"
    assert outcomes["deep.json"].startswith(f"{tmp_path / 'deep.json'}:1: message nests deeper")
    assert outcomes["many.jsonl"][0] is None
    assert outcomes["many.jsonl"][1].startswith("not UTF-8")
    assert outcomes["many.jsonl"][2].startswith("message nests deeper")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_replay_shows_a_progress_bar_on_big_files(warehouse, tmp_path, replay_env) -> None:
    """Without this, replaying a large dead-letter archive prints nothing for minutes and looks
    hung."""
    from canvas_assets.commands.replay import replay, resources

    path = tmp_path / "big.jsonl"
    stamp = "2026-09-01T12:00:00Z"
    path.write_text(
        "\n".join(
            json.dumps({"metadata": {"event_name": "asset_accessed", "event_time": stamp},
                        "body": {"asset_id": str(n)}})
            for n in range(PROGRESS_FROM)
        )
    )  # fmt: skip
    target = resources(replay_env)
    terminal = _Terminal()
    report = replay([Path(path)], target, err=terminal)
    assert (
        report.summary()
        == f"read {PROGRESS_FROM}: applied 0, duplicate 0, skipped {PROGRESS_FROM}, quarantined 0"
    )
    assert "landing: 100%" in terminal.getvalue()
    assert f"{PROGRESS_FROM}/{PROGRESS_FROM}" in terminal.getvalue()
