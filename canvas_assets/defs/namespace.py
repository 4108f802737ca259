"""The names this code location gives its Dagster objects.

One Dagster instance can hold several institutions, each its own code location built from its
own settings. Asset keys, the partitions, the asset group, the Canvas pool and the apply runs'
concurrency tag carry the institution, so nothing collides; with no institution set the names
are the plain ones (``canvas/courses``, ``semester``, ``canvas_api``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from canvas_assets.settings import Settings

# Apply runs carry this tag (value: namespace and semester); dagster.yaml allows one run per
# value at a time, and the sensor finds a semester's earlier apply runs by it.
APPLY_TAG = "canvas-assets/apply"


@dataclass(frozen=True)
class Namespace:
    institution: str | None = None
    partitions: dg.DynamicPartitionsDefinition = field(init=False)

    def __post_init__(self) -> None:
        name = "semester" if self.institution is None else f"semester_{self.institution}"
        object.__setattr__(self, "partitions", dg.DynamicPartitionsDefinition(name=name))

    @classmethod
    def of(cls, settings: Settings) -> Namespace:
        return cls(settings.institution)

    @property
    def prefix(self) -> list[str]:
        return ["canvas"] if self.institution is None else [self.institution, "canvas"]

    def key(self, table: str) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, table])

    @property
    def group(self) -> str:
        return "canvas" if self.institution is None else f"canvas_{self.institution}"

    @property
    def canvas_pool(self) -> str:
        """Backfills that call Canvas share it, so parallel semesters do not throttle each
        other on one access token (limit in dagster.yaml)."""
        return "canvas_api" if self.institution is None else f"canvas_api_{self.institution}"

    def apply_tag(self, semester: str) -> dict[str, str]:
        return {APPLY_TAG: f"{self.institution or 'canvas'}:{semester}"}
