"""Canvas LMS over its REST API: the client session (paging, throttling, retries, clear errors),
where its tokens come from (a fixed token, or a developer key's shared token and its OAuth2
endpoints), the scopes of the endpoints used, the Dagster resource, and the fetch plan of one
semester."""

from canvas_assets.canvas.errors import (
    CanvasAuthError,
    CanvasError,
    CanvasIncludesWithheldError,
    CanvasNotFoundError,
    CanvasPermissionError,
    CanvasReconnectError,
    CanvasRequestError,
    CanvasScopeError,
    CanvasThrottledError,
)
from canvas_assets.canvas.resource import CanvasResource
from canvas_assets.canvas.session import CanvasSession

__all__ = [
    "CanvasAuthError",
    "CanvasError",
    "CanvasIncludesWithheldError",
    "CanvasNotFoundError",
    "CanvasPermissionError",
    "CanvasReconnectError",
    "CanvasRequestError",
    "CanvasResource",
    "CanvasScopeError",
    "CanvasSession",
    "CanvasThrottledError",
]
