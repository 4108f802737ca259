"""The one way a table is named in SQL: its schema and name composed as quoted identifiers, so no
value is ever formatted into a statement."""

from __future__ import annotations

from psycopg import sql


def qualified_table(schema: str, table: str) -> sql.Composable:
    """``"schema"."table"``."""
    return sql.SQL("{}.{}").format(sql.Identifier(schema), sql.Identifier(table))
