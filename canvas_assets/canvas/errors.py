"""Errors talking to Canvas; each message names the setting to fix where there is one."""


class CanvasError(RuntimeError):
    """Base class for errors talking to Canvas."""


class CanvasAuthError(CanvasError):
    pass


class CanvasPermissionError(CanvasError):
    pass


class CanvasNotFoundError(CanvasError):
    pass


class CanvasThrottledError(CanvasError):
    pass


class CanvasRequestError(CanvasError):
    pass
