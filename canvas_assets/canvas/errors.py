"""Errors talking to Canvas; each message names the setting to fix where there is one."""

from __future__ import annotations

from collections.abc import Sequence


class CanvasError(RuntimeError):
    """Base class for errors talking to Canvas."""


class CanvasAuthError(CanvasError):
    pass


class CanvasReconnectError(CanvasAuthError):
    """Canvas no longer accepts the refresh token: the authorisation must be made again."""


class CanvasScopeError(CanvasAuthError):
    """A scoped developer key lacks the scope of an endpoint the project uses: every object of
    that endpoint is refused, so it is a configuration error, not one object's permission."""


class CanvasPermissionError(CanvasError):
    pass


class CanvasNotFoundError(CanvasError):
    pass


class CanvasThrottledError(CanvasError):
    pass


class CanvasRequestError(CanvasError):
    pass


class CanvasIncludesWithheldError(CanvasError):
    """Canvas answered ``route`` without fields it was asked for with ``include[]``. A scoped
    developer key without "Allow Include Parameters" has them filtered away; storing the answer
    would store those values empty, silently."""

    def __init__(self, route: str, missing: Sequence[str]) -> None:
        self.route, self.missing = route, tuple(missing)
        email = ""
        if "email" in self.missing:
            email = (
                " For email, the user who authorised Canvas may also lack the permission to "
                "see e-mail addresses (Users - view primary email address)."
            )
        super().__init__(
            f"Canvas left out {', '.join(self.missing)} from GET {route}, which the project "
            'asks for with include[]: a scoped developer key drops include[] unless its "Allow '
            'Include Parameters" setting is on. Turn it on (Admin > Developer Keys > edit the '
            f"key), then run `canvas-assets canvas check`; nothing is stored without them.{email}"
        )
