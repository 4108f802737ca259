"""Fault injection at the named stages of the Live Events path, from outside the code under test:
each stage is a call the path makes, wrapped so that a test's callback runs at that moment (to
SIGKILL the process, cut the network, ...).

- ``received``: a batch was received from SQS, before it is landed;
- ``landing``: inside the landing transaction, after a message was stored;
- ``landed``: a batch was committed, before it is deleted from SQS;
- ``deleted``: a batch was deleted from SQS;
- ``routing``: routes were resolved, before they are saved.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from unittest import mock

from canvas_assets.live_events import land, poll, store
from canvas_assets.live_events.sqs import SQSQueueResource

Callback = Callable[[str], None]


def _around(original: Callable, callback: Callback, before: str | None, after: str | None):
    def wrapped(*args, **kwargs):
        if before is not None:
            callback(before)
        result = original(*args, **kwargs)
        if after is not None:
            callback(after)
        return result

    return wrapped


@contextlib.contextmanager
def at_stages(callback: Callback) -> Iterator[None]:
    """Run ``callback(stage)`` at each stage above while the block runs."""
    with contextlib.ExitStack() as stack:
        for target, name, before, after in (
            (poll, "land_messages", "received", "landed"),
            (land, "land_one", None, "landing"),
            (SQSQueueResource, "delete", None, "deleted"),
            (store, "save_routes", "routing", None),
        ):
            wrapped = _around(getattr(target, name), callback, before, after)
            stack.enter_context(mock.patch.object(target, name, wrapped))
        yield
