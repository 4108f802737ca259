"""Canvas-format Live Event envelopes and their delivery to SQS.

Bodies follow Canvas's AsyncAPI schemas: ids are strings, mostly global
(``shard * 10**13 + local``), nil fields are dropped, and ``metadata.event_time`` mixes three
timestamp formats.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from ..institution import Institution, global_id

HOSTNAME = "sandbox.canvas.local"
TIME_FORMATS = ("iso_ms", "iso", "offset")
TIME_FORMAT_WEIGHTS = (70, 20, 10)
OFFSETS = (
    timezone(timedelta(hours=-7)),
    timezone(timedelta(hours=-5)),
    timezone(timedelta(hours=1)),
)


def format_time(moment: datetime, time_format: str = "iso_ms") -> str:
    moment = moment.astimezone(UTC)
    if time_format == "iso_ms":
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if time_format == "iso":
        return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Ruby's Time#to_s in some other zone, e.g. "2026-09-01 05:00:00 -0700".
    offset = OFFSETS[moment.second % len(OFFSETS)]
    return moment.astimezone(offset).strftime("%Y-%m-%d %H:%M:%S %z")


def envelope(
    institution: Institution,
    event_name: str,
    body: dict,
    *,
    event_time: datetime,
    user_id: int | None = None,
    context: tuple[str, int] | None = None,
    time_format: str = "iso_ms",
    system: bool = False,
    request_id: str | None = None,
) -> dict:
    """A Canvas-format live event: ``{"metadata": {...}, "body": {...}}``; None fields dropped."""
    inst = institution
    root = inst.accounts[inst.root_account_id]
    gid = lambda local: str(global_id(local, inst.shard_id))  # noqa: E731
    metadata: dict[str, Any] = {
        "root_account_id": gid(inst.root_account_id),
        "root_account_uuid": root["uuid"],
        "root_account_lti_guid": f"{root['uuid']}:canvas-lms",
        "event_name": event_name,
        "event_time": format_time(event_time, time_format),
        "producer": "canvas",
    }
    request_id = request_id or str(uuid.uuid4())
    if system:  # emitted from a background job, e.g. grade recalculation
        metadata.update(job_id=str(int(request_id[:8], 16)), job_tag="Score#recompute")
    else:
        metadata.update(hostname=HOSTNAME, request_id=request_id, http_method="PUT")
    if user_id is not None:
        metadata["user_id"] = gid(user_id)
        metadata["user_login"] = inst.users[user_id]["login_id"]
    if context is not None:
        kind, local = context
        metadata["context_type"], metadata["context_id"] = kind, gid(local)
        account = inst.courses[local]["account_id"] if kind == "Course" else inst.root_account_id
        metadata["context_account_id"] = gid(account)
    return {"metadata": metadata, "body": {k: v for k, v in body.items() if v is not None}}


def send_envelopes(sqs_client: Any, queue_url: str | None, envelopes: list[dict]) -> None:
    """send_message_batch in chunks of 10, copying event_name/event_time into attributes."""
    for start in range(0, len(envelopes), 10):
        entries = [
            {
                "Id": str(i),
                "MessageBody": json.dumps(env, ensure_ascii=False),
                "MessageAttributes": {
                    "event_name": {
                        "DataType": "String",
                        "StringValue": env["metadata"]["event_name"],
                    },
                    "event_time": {
                        "DataType": "String",
                        "StringValue": env["metadata"]["event_time"],
                    },
                },
            }
            for i, env in enumerate(envelopes[start : start + 10])
        ]
        failed = sqs_client.send_message_batch(QueueUrl=queue_url, Entries=entries).get("Failed")
        if failed:
            raise RuntimeError(f"SQS rejected live events: {failed}")
