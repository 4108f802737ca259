"""A lint rule, as a test: no SQL anywhere is built by formatting values into strings.

SQL text must be string literals (``sql.SQL("... {} ...")``) with identifiers composed by
psycopg.sql and values bound as parameters. The rule reads every module of the project
(package, tests, benchmarks) and flags: an f-string, ``%``, ``+`` or ``str.format`` that builds
SQL text; a non-literal argument to ``sql.SQL``; and such a string passed to ``execute``. A line
that must do otherwise says why in a ``# sql-ok: <reason>`` comment.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("canvas_assets", "canvas_assets_tests", "bench")
SQL_TEXT = re.compile(
    r"\b(SELECT\b.+\bFROM|INSERT\s+INTO|UPDATE\s+\S+\s+SET|DELETE\s+FROM|"
    r"CREATE\s+(TABLE|INDEX|SCHEMA)|ALTER\s+TABLE|DROP\s+(TABLE|SCHEMA)|TRUNCATE\b)",
    re.DOTALL,
)
EXECUTORS = {"execute", "executemany", "copy", "stream"}


def _literal_text(node: ast.AST) -> str:
    """The literal parts of a string expression (f-string pieces, operands of % and +)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) + _literal_text(node.right)
    return ""


def _is_formatting(node: ast.AST) -> bool:
    """An f-string with values, ``"..." % x``, ``"..." + x`` or ``"...".format(...)``."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod | ast.Add):
        return bool(_literal_text(node.left) or _literal_text(node.right))
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "format"
        and isinstance(node.func.value, ast.Constant)
        and isinstance(node.func.value.value, str)
    )


def _formatted_text(node: ast.AST) -> str:
    if isinstance(node, ast.Call):  # "...".format(...)
        return _literal_text(node.func.value)  # type: ignore[attr-defined]
    return _literal_text(node)


def _callee(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def violations(source: str, filename: str = "<source>") -> list[str]:
    """Every place in ``source`` where SQL is built by formatting values into a string."""
    found = []
    lines = source.splitlines()
    tree = ast.parse(source, filename)
    constants = {  # module-level NAME = "literal": as good as the literal itself
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }  # fmt: skip
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if line and "# sql-ok:" in lines[line - 1]:
            continue
        where = f"{filename}:{line}"
        if _is_formatting(node) and SQL_TEXT.search(_formatted_text(node)):
            found.append(f"{where}: SQL text built by string formatting")
        if not isinstance(node, ast.Call) or not node.args:
            continue
        first = node.args[0]
        literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
        if _callee(node) == "SQL" and not (
            literal or (isinstance(first, ast.Name) and first.id in constants)
        ):
            found.append(f"{where}: sql.SQL() of something other than a string literal")
        if _callee(node) in EXECUTORS and _is_formatting(first):
            found.append(f"{where}: {_callee(node)}() of a formatted string")
    return found


def test_the_rule_catches_each_way_of_formatting_values_into_sql() -> None:
    """Without this, the project-wide check below could pass because the rule sees nothing."""
    bad = """
conn.execute(f"SELECT * FROM t WHERE id = {course_id}")
conn.execute("SELECT * FROM t WHERE id = %s" % course_id)
query = "DELETE FROM t WHERE name = '" + name + "'"
cur.executemany("UPDATE t SET name = '{}'".format(name), rows)
sql.SQL(f"SELECT {column} FROM t")
sql.SQL(text)
conn.execute(f"VACUUM {table}")
"""
    flagged = {int(v.split(":")[1]) for v in violations(bad)}
    assert flagged == set(range(2, 9))  # every line of ``bad``
    good = """
conn.execute(sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(t)), (course_id,))
message = f"Selected {n} rows from the list"
conn.execute("SELECT 1")
sql.SQL(text)  # sql-ok: the statement itself, re-wrapped to be explained
DDL = "CREATE TABLE {} (id int)"
sql.SQL(DDL).format(sql.Identifier(name))
"""
    assert violations(good) == []


def test_no_sql_in_the_project_is_built_by_formatting_values_into_strings() -> None:
    """Without this, one f-string with a value in a query — an injection hole, and a query
    plan that never caches — could slip in unnoticed; every query must bind its values and
    compose identifiers with psycopg.sql."""
    found = []
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += violations(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert found == []
