"""A sensor tick that cannot reach the warehouse says so in one line naming the setting."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TypeVar

import dagster as dg

from canvas_assets.canvas.errors import CanvasError
from canvas_assets.institutions import SettingError
from canvas_assets.outcomes import first_line
from canvas_assets.warehouse import WarehouseError

Tick = TypeVar("Tick", bound=Callable[..., object])


def reported_in_one_line(tick: Tick) -> Tick:
    """The tick's message is the error's one line (each names the setting to fix), logged as an
    error, instead of a traceback: the next tick tries again."""

    @functools.wraps(tick)
    def guarded(context: dg.SensorEvaluationContext, **resources: object) -> object:
        try:
            return tick(context, **resources)
        except (WarehouseError, CanvasError, SettingError) as exc:
            line = f"Not run: {first_line(exc)}"
            context.log.error(line)
            return dg.SkipReason(line)

    return guarded  # type: ignore[return-value]
