"""`canvas-assets events replay FILE...`: apply archived or dead-lettered Live Events through the
same landing, routing and apply path as the sensor."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from canvas_assets.canvas import CanvasResource
from canvas_assets.canvas.fetch import fetch_terms, find_term
from canvas_assets.defs.resources import canvas_resource, warehouse_resource
from canvas_assets.live_events.apply import apply_semester_events
from canvas_assets.live_events.land import land_messages
from canvas_assets.live_events.route import route_pending
from canvas_assets.live_events.store import count_pending, pending_semesters
from canvas_assets.settings import (
    CANVAS_API_TOKEN_ENV,
    CANVAS_BASE_URL_ENV,
    SettingError,
    Settings,
)
from canvas_assets.warehouse import WarehouseResource
from canvas_assets.warehouse.reads import imported_semesters


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


def resources(settings: Settings) -> tuple[CanvasResource, WarehouseResource]:
    """The Canvas and warehouse resources, with their secrets resolved for use outside a run."""
    for name, present in (
        (CANVAS_BASE_URL_ENV, settings.canvas_configured),
        (CANVAS_API_TOKEN_ENV, settings.canvas_token_configured),
    ):
        if not present:
            raise SettingError(f"{name} is not set; replay needs Canvas and the warehouse.")
    return (
        canvas_resource(settings).process_config_and_initialize(),
        warehouse_resource(settings).process_config_and_initialize(),
    )


def replay(
    paths: list[Path],
    canvas: CanvasResource,
    warehouse: WarehouseResource,
    settings: Settings,
) -> ReplayReport:
    report = ReplayReport()
    schema = warehouse.table_schema()
    with warehouse.connect() as conn, canvas.session() as session:
        for path in paths:
            messages = list(read_messages(path))
            report.read += len(messages)
            landed = land_messages(conn, schema, messages)
            report.duplicate += landed.duplicates
            report.quarantined += landed.quarantined
            report.skipped += landed.unknown
        routed = route_pending(conn, schema, session, settings.target_semesters)
        report.skipped += routed.skipped + routed.out_of_target
        terms = fetch_terms(session)
        # Imported semesters are the ones on the Imported Semesters card.
        for semester in pending_semesters(conn, schema, imported_semesters(conn, schema)):
            term = find_term(terms, semester)
            if term is None:
                continue
            result = apply_semester_events(
                conn, schema, session, semester, term, datetime.now(UTC), settings.target_semesters
            )
            report.applied += result.applied + result.stale
        report.pending = count_pending(conn, schema)
    return report
