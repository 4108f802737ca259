"""What `canvas-assets dev` checks before it starts anything: the warehouse and every Canvas the
user configured (the local pieces it starts itself need no check). A failure stops the stack
with one line naming the setting to fix and what failed, the password masked."""

from __future__ import annotations

import dagster as dg
import psycopg

from canvas_assets.commands.canvas_check import check_institution
from canvas_assets.defs.resources import canvas_resource, ready
from canvas_assets.institutions import Institution, semester_matches
from canvas_assets.outcomes import first_line, redact_url
from canvas_assets.settings import Settings
from canvas_assets.warehouse.reads import sync_status
from canvas_devstack.processes import DevStackError

CHECK_TIMEOUT_SECONDS = 5
# What went wrong, by PostgreSQL's SQLSTATE (connection failures before the server answers
# have none, and are told by their message).
_SQLSTATES = {
    "28P01": "authentication failed",
    "28000": "authentication failed",
    "3D000": "the database does not exist",
}


def _what_failed(exc: psycopg.Error) -> str:
    known = _SQLSTATES.get(getattr(exc, "sqlstate", None) or "")
    if known:
        return known
    text = str(exc).lower()
    if "password authentication failed" in text or ("role" in text and "not exist" in text):
        return "authentication failed"
    if "database" in text and "does not exist" in text:
        return "the database does not exist"
    if "refused" in text or "no such file" in text or "could not connect" in text:
        return "the server refused the connection or is not there"
    if "timeout" in text or "timed out" in text:
        return "the server did not answer"
    return "it could not connect"


def check_warehouse(url: str, setting: str = "CANVAS_WAREHOUSE_URL") -> None:
    """Connect once to the configured warehouse; a DevStackError names the setting and why."""
    try:
        with psycopg.connect(url, connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise DevStackError(
            f"{setting} ({redact_url(url)}): {_what_failed(exc)} ({first_line(exc)})."
        ) from None


def check_canvas(settings: Settings, institution: Institution) -> None:
    """`canvas-assets canvas check` of the institution's Canvas (reachable, credentials
    accepted, account found, every endpoint allowed); a DevStackError says the first failure
    and its fix in one line, naming the setting."""
    where = f"institution {institution.name}: " if institution.name else ""
    try:
        report = check_institution(ready(canvas_resource(settings, institution)))
    except dg.DagsterInvalidConfigError as exc:  # a credential's variable is not set
        raise DevStackError(f"{where}{first_line(exc)}") from None
    if report.failed:
        raise DevStackError(f"{where}{report.first_failure()}")


def untargeted_semesters(settings: Settings, warehouse_url: str) -> list[str]:
    """One line per institution whose imported semesters its Target Semesters no longer admit
    (the first tick marks them ``not targeted`` on the card), said at start."""
    lines = []
    with psycopg.connect(warehouse_url, connect_timeout=CHECK_TIMEOUT_SECONDS) as conn:
        for institution in settings.institutions:
            try:
                imported = [row["semester"] for row in sync_status(conn, institution.schema_name)]
            except psycopg.errors.UndefinedTable:  # a schema never migrated: nothing imported
                conn.rollback()
                continue
            left = [s for s in imported if not semester_matches(s, institution.target_semesters)]
            if left:
                semesters = ", ".join(sorted(left))
                lines.append(
                    f"{institution.label}: {semesters} imported but outside Target Semesters "
                    "(CANVAS_TARGET_SEMESTERS): shown as not targeted; their Live Events are "
                    "closed as out_of_target until they are targeted again"
                )
    return lines
