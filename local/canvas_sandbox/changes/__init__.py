"""Changes to the sandbox institution, published as Canvas Live Events on SQS."""

from .courses import rename_course
from .driver import MUTATIONS, ChangeDriver
from .events import envelope, format_time, send_envelopes

__all__ = [
    "MUTATIONS",
    "ChangeDriver",
    "envelope",
    "format_time",
    "rename_course",
    "send_envelopes",
]
