"""What the pandera models say about the warehouse columns: their names and PostgreSQL types, the
bookkeeping columns every table has, and frames built with exactly a model's columns."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from canvas_assets.tables.models import Strict


def columns(model: type[Strict]) -> list[str]:
    return list(model.to_schema().columns)


_SQL_TYPES = {
    "int64": "bigint",
    "Int64": "bigint",
    "str": "text",
    "string": "text",
    "string[python]": "text",
    "float64": "double precision",
    "datetime64[us, UTC]": "timestamp with time zone",
}
# Every warehouse table also has these, maintained by the writes.
BOOKKEEPING_COLUMNS = {
    "source_updated_at": (
        "timestamp with time zone",
        "When the row's data was true in Canvas (a backfill's fetch, an event's time).",
    ),
    "deleted_at": (
        "timestamp with time zone",
        "Set when Canvas no longer returns the object (or deleted it); null for active rows.",
    ),
}


def sql_type(model: type[Strict], column: str) -> str:
    """The column's PostgreSQL type, as information_schema names it."""
    field = model.to_schema().columns[column]
    declared = (field.metadata or {}).get("sql_type")
    return declared or _SQL_TYPES[str(field.dtype)]


def frame(model: type[Strict], rows: Iterable[dict]) -> pd.DataFrame:
    """Rows as a DataFrame with exactly the model's columns, in order (empty frames too).

    Each row becomes a tuple as it streams in: a large semester never holds all its rows as
    dicts at once (a dict per row costs several times the row's values)."""
    names = columns(model)
    records = (tuple(map(row.get, names)) for row in rows)
    return pd.DataFrame.from_records(records, columns=names)
