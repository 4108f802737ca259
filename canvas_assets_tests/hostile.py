"""Hypothesis strategies for Live Events messages: valid Canvas envelopes and hostile ones.

Hostile messages are valid envelopes with one or more parts replaced (missing and extra fields,
wrong types, nulls, huge and deeply nested values, lone surrogates, NUL, non-ASCII digits,
right-to-left marks, SQL metacharacters, absurd timestamps, ids beyond bigint), or raw text that
is not an envelope at all (deep nesting, 4,301-digit numbers, NaN, broken JSON, Caliper).
``ISSUE_BODIES`` are the messages the probe in issue 11 found escaping the landing call.
"""

from __future__ import annotations

import json

from hypothesis import strategies as st

from canvas_assets.live_events.parse import EVENT_IDS

SHARD = 2107
ROOT_ACCOUNT = str(SHARD * 10**13 + 1)
RAW = "__raw_literal__"  # a placeholder replaced by a raw JSON literal after json.dumps


def canvas_id(local: int) -> str:
    return str(SHARD * 10**13 + local)


def _id_fields(name: str, ids: dict[str, int]) -> dict[str, str]:
    body: dict[str, str] = {}
    for attribute, spec in EVENT_IDS[name].items():
        body[spec.paths[0]] = canvas_id(ids[attribute])
    return body


@st.composite
def valid_envelopes(draw: st.DrawFn) -> dict:
    """A Canvas-format envelope that must land: a known event type with every id it needs."""
    name = draw(st.sampled_from(sorted(EVENT_IDS)))
    local = st.integers(min_value=1, max_value=10**9)
    ids = {a: draw(local) for a in ("course_id", "section_id", "enrollment_id", "user_id")}
    moment = draw(st.datetimes(min_value=_dt(2015), max_value=_dt(2035)))
    stamp = draw(
        st.sampled_from(
            [
                moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z",
                moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
                moment.strftime("%Y-%m-%d %H:%M:%S -0700"),
                moment.strftime("%Y-%m-%dT%H:%M:%S+02:00"),
            ]
        )
    )
    marker = draw(st.uuids()).hex  # makes each valid message distinct
    body = {**_id_fields(name, ids), "name": f"valid {marker}", "workflow_state": "available"}
    metadata = {"event_name": name, "event_time": stamp, "root_account_id": ROOT_ACCOUNT}
    return {"metadata": metadata, "body": body}


def _dt(year: int):
    from datetime import datetime

    return datetime(year, 1, 1)


NASTY_TEXT = [
    "",
    " ",
    "\u0000",
    "nul \u0000 inside",
    "\ud800",
    "lone \udfff surrogate",
    "①",
    "²",
    "١٢٣",
    "１２",
    "\u202eRTL override",
    "שלום",
    "'; DROP TABLE live_events; --",
    "%s %(x)s {} {0}",
    "\\",
    '"',
    "\u2028\u2029",
    "🙂" * 3,
    "a" * 70_000,
]
ABSURD_TIMES = [
    "now",
    "today",
    "12:00",
    "1/2/3",
    "Jan 1 2024",
    "0001-01-01T00:00:00+05:00",
    "0000-01-01T00:00:00Z",
    "-0001-01-01T00:00:00Z",
    "10000-01-01T00:00:00Z",
    "9999-12-31T23:59:59-05:00",
    "2026-13-45T25:61:61Z",
    "1969-12-31T23:59:59Z",
    "2026-09-01T12:00:00.218Z\u0000",
    "２０２６-09-01T12:00:00Z",
]
BAD_IDS = [
    "9223372036854775808",
    str(2**64),
    "1" * 4301,
    "-1",
    "0x10",
    "1e3",
    "1.5",
    " 12 ",
    "①",
    "٣",
    "12\u0000",
    "",
]
# Inserted as raw JSON text (json.dumps could not produce them, or would refuse to).
RAW_LITERALS = [
    "1" * 4301,
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "1" * 30,
    "1.0e308",
    "[" * 1500 + "]" * 1500,
    '{"a":' * 5000 + "1" + "}" * 5000,
]


def nested(depth: int, leaf: object = 1) -> object:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"a": value}
    return value


def hostile_values() -> st.SearchStrategy[object]:
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        st.sampled_from(NASTY_TEXT + ABSURD_TIMES + BAD_IDS),
        st.just(RAW),
    )
    deep = st.integers(min_value=20, max_value=200).map(nested)  # deeper ones are RAW_LITERALS
    return st.one_of(
        scalars,
        deep,
        st.lists(scalars, max_size=4),
        st.dictionaries(st.text(max_size=8), scalars, max_size=4),
    )


@st.composite
def hostile_envelopes(draw: st.DrawFn) -> str:
    """A valid envelope with 1-3 parts replaced, removed or added, serialized to text."""
    envelope = draw(valid_envelopes())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        section = draw(st.sampled_from(["metadata", "body", None]))
        target = envelope if section is None else envelope.get(section)
        if not isinstance(target, dict):
            envelope[section or "metadata"] = draw(hostile_values())
            continue
        key = draw(st.sampled_from(sorted(target) + ["extra_field", "metadata", "body"]))
        if draw(st.booleans()) and key in target:
            del target[key]
        else:
            target[key] = draw(hostile_values())
    text = json.dumps(envelope, ensure_ascii=draw(st.booleans()))
    return text.replace(f'"{RAW}"', draw(st.sampled_from(RAW_LITERALS)))


def raw_bodies() -> st.SearchStrategy[str]:
    """Text that is not an envelope: broken, deep, huge or exotic JSON, or no JSON at all."""
    return st.one_of(
        st.text(max_size=200),
        st.sampled_from(
            [
                "[" * 5000,
                '{"a":' * 2000 + "1" + "}" * 2000,
                "[1, 2]",
                "[broken",
                "{not json",
                "1" * 4301,
                "NaN",
                '{"metadata": {"event_name": "course_updated"}, "body": 1e999}',
                "\ufeff{}",
                "null",
                json.dumps({"sensor": "x", "dataVersion": "caliper", "data": []}),
            ]
        ),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=10),
            lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner),
            max_leaves=20,
        ).map(json.dumps),
    )


def hostile_messages() -> st.SearchStrategy[str]:
    return st.one_of(hostile_envelopes(), raw_bodies())


def _issue_envelope(metadata: dict, body: dict) -> str:
    base = {"event_name": "course_updated", "event_time": "2026-09-01T12:00:00Z"}
    return json.dumps({"metadata": {**base, **metadata}, "body": {"course_id": "12", **body}})


# What issue 11's probe found escaping the landing call (each crashed its batch).
ISSUE_BODIES = {
    "deep nesting": '{"metadata": ' + "[" * 1200 + "]" * 1200 + ', "body": {}}',
    "unicode digit root_account_id": _issue_envelope({"root_account_id": "①"}, {}),
    "year 10000": _issue_envelope({"event_time": "10000-01-01T00:00:00Z"}, {}),
    "year 0 after offset": _issue_envelope({"event_time": "0001-01-01T00:00:00+05:00"}, {}),
    "year -1": _issue_envelope({"event_time": "-0001-01-01T00:00:00Z"}, {}),
    "4,301-digit integer": _issue_envelope({}, {"total": RAW}).replace(f'"{RAW}"', "1" * 4301),
    "huge number for an id": _issue_envelope({}, {"course_id": RAW}).replace(f'"{RAW}"', "1" * 400),
    "1e999 where a number is expected": _issue_envelope({}, {"course_id": RAW}).replace(
        f'"{RAW}"', "1e999"
    ),
    "timestamp 'now'": _issue_envelope({"event_time": "now"}, {}),
}
