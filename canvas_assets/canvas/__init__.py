"""Canvas LMS over its REST API: the client session (paging, throttling, retries, clear errors),
the Dagster resource, and the fetch plan of one semester."""

from canvas_assets.canvas.errors import (
    CanvasAuthError,
    CanvasError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasRequestError,
    CanvasThrottledError,
)
from canvas_assets.canvas.resource import CanvasResource
from canvas_assets.canvas.session import CanvasSession

__all__ = [
    "CanvasAuthError",
    "CanvasError",
    "CanvasNotFoundError",
    "CanvasPermissionError",
    "CanvasRequestError",
    "CanvasResource",
    "CanvasSession",
    "CanvasThrottledError",
]
