"""The term list: every Canvas enrollment term, validated and upserted into ``terms``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd
import psycopg

from canvas_assets.canvas import CanvasSession
from canvas_assets.canvas.fetch import fetch_terms
from canvas_assets.tables import TERMS
from canvas_assets.tables.columns import frame
from canvas_assets.tables.mapping import term_row
from canvas_assets.warehouse.writes import WriteCounts, write_terms


@dataclass(frozen=True)
class TermsRefresh:
    """The validated terms, and what writing them did."""

    terms: pd.DataFrame
    counts: WriteCounts


def refresh_terms(
    conn: psycopg.Connection, schema: str, session: CanvasSession, observed_at: datetime
) -> TermsRefresh:
    """Fetch, validate and write the terms."""
    rows = [term_row(term) for term in fetch_terms(session)]
    validated = TERMS.model.validate(frame(TERMS.model, rows), lazy=True)
    return TermsRefresh(validated, write_terms(conn, schema, validated, observed_at))
