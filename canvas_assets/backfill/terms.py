"""The term list: every Canvas enrollment term, validated and upserted into ``terms``."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import psycopg

from canvas_assets.canvas import CanvasSession
from canvas_assets.canvas.fetch import fetch_terms
from canvas_assets.tables import TERMS
from canvas_assets.tables.mapping import term_row
from canvas_assets.tables.models import frame
from canvas_assets.warehouse.writes import WriteCounts, write_terms


def refresh_terms(
    conn: psycopg.Connection, schema: str, session: CanvasSession, observed_at: datetime
) -> tuple[pd.DataFrame, WriteCounts]:
    """Fetch, validate and write the terms; returns the validated frame and the write counts."""
    rows = [term_row(term) for term in fetch_terms(session)]
    validated = TERMS.model.validate(frame(TERMS.model, rows), lazy=True)
    return validated, write_terms(conn, schema, validated, observed_at)
