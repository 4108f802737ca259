"""`canvas-assets events replay FILE...`: apply archived or dead-lettered Live Events through the
same landing, routing and apply path as the sensor."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from psycopg import sql

from canvas_assets.canvas import CanvasResource
from canvas_assets.incremental import apply_semester_events, pending_semesters, route_pending
from canvas_assets.live_events import land_messages
from canvas_assets.semester import fetch_terms, find_term
from canvas_assets.settings import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_WAREHOUSE_SCHEMA,
    SettingError,
    SyncSettings,
)
from canvas_assets.warehouse import WarehouseResource


@dataclass
class ReplayReport:
    read: int = 0
    applied: int = 0
    duplicate: int = 0
    skipped: int = 0
    quarantined: int = 0
    pending: int = 0

    def line(self) -> str:
        return (
            f"read {self.read}: applied {self.applied}, duplicate {self.duplicate}, "
            f"skipped {self.skipped}, quarantined {self.quarantined}"
            + (f", still pending {self.pending}" if self.pending else "")
        )


def read_messages(path: Path) -> Iterator[tuple[str | None, str]]:
    """(message id, raw body) pairs from a JSON file (an envelope, an SQS message, or a list of
    either) or a JSON Lines file (one per line). Unparseable lines are passed on raw so they are
    quarantined, not lost."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    records: list[object]
    if stripped.startswith("["):
        records = json.loads(stripped)
    else:
        try:
            records = [json.loads(stripped)] if stripped else []
        except json.JSONDecodeError:
            records = [line for line in text.splitlines() if line.strip()]
    for record in records:
        if isinstance(record, str):
            try:
                record = json.loads(record)
            except json.JSONDecodeError:
                yield None, record
                continue
        if isinstance(record, dict) and "Body" in record:
            body = record["Body"]
            yield record.get("MessageId"), body if isinstance(body, str) else json.dumps(body)
        else:
            yield None, json.dumps(record)


def _require(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SettingError(f"{name} is not set; replay needs Canvas and the warehouse.")
    return value


def resources_from_env() -> tuple[CanvasResource, WarehouseResource]:
    canvas = CanvasResource(
        base_url=_require("CANVAS_BASE_URL"),
        api_token=_require("CANVAS_API_TOKEN"),
        account_id=os.environ.get("CANVAS_ACCOUNT_ID") or DEFAULT_ACCOUNT_ID,
    )
    warehouse = WarehouseResource(
        url=os.environ.get("CANVAS_WAREHOUSE_URL") or None,
        schema_name=os.environ.get("CANVAS_WAREHOUSE_SCHEMA") or DEFAULT_WAREHOUSE_SCHEMA,
        state_dir=os.environ.get("CANVAS_ASSETS_HOME") or None,
    )
    return canvas, warehouse


def replay(
    paths: list[Path],
    canvas: CanvasResource,
    warehouse: WarehouseResource,
    settings: SyncSettings,
) -> ReplayReport:
    report = ReplayReport()
    schema = warehouse.table_schema()
    with warehouse.connect() as conn:
        for path in paths:
            messages = list(read_messages(path))
            report.read += len(messages)
            landed = land_messages(conn, schema, messages)
            report.duplicate += landed.duplicates
            report.quarantined += landed.quarantined
            report.skipped += landed.unknown
        # Imported semesters are the ones the warehouse knows (the Imported Semesters card).
        semesters = {
            row[0]
            for row in conn.execute(
                sql.SQL("SELECT semester FROM {}.semester_sync_status").format(
                    sql.Identifier(schema)
                )
            )
        }
        session = canvas.session()
        try:
            routed = route_pending(conn, schema, session, settings.target_semesters)
            report.skipped += routed.skipped + routed.out_of_target
            terms = fetch_terms(session)
            for semester in pending_semesters(conn, schema, semesters):
                term = find_term(terms, semester)
                if term is None:
                    continue
                result = apply_semester_events(
                    conn,
                    schema,
                    session,
                    semester,
                    term,
                    datetime.now(UTC),
                    settings.target_semesters,
                )
                report.applied += result.applied + result.stale
        finally:
            session.close()
        report.pending = sum(
            1
            for _ in conn.execute(
                sql.SQL("SELECT 1 FROM {}.live_events WHERE applied_at IS NULL").format(
                    sql.Identifier(schema)
                )
            )
        )
    return report
