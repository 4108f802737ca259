"""The names the code location gives one institution's Dagster objects.

One code location serves every institution of the deployment. Asset keys, the partitions, the
asset group, the Canvas pool, the resource keys and the per-institution jobs carry the
institution's name, so nothing collides; the single unnamed institution of the CANVAS_*
settings keeps the plain names (``canvas/courses``, ``semester``, ``canvas_api``,
``canvas_semester_sync``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dagster as dg

from canvas_assets.institutions import Institution

SEMESTER_JOB = "canvas_semester_sync"


@dataclass(frozen=True)
class Namespace:
    institution: Institution
    partitions: dg.DynamicPartitionsDefinition = field(init=False)

    def __post_init__(self) -> None:
        partitions = dg.DynamicPartitionsDefinition(name=self.suffixed("semester"))
        object.__setattr__(self, "partitions", partitions)

    @property
    def name(self) -> str | None:
        return self.institution.name

    @property
    def label(self) -> str:
        """How tick messages, run configs and errors name the institution."""
        return self.institution.label

    @property
    def schema(self) -> str:
        return self.institution.schema_name

    def suffixed(self, base: str) -> str:
        """``base``, or ``base_<name>`` for a named institution: names that must be unique in
        the code location (ops, jobs, pools, resource keys, partitions)."""
        return base if self.name is None else f"{base}_{self.name}"

    @property
    def prefix(self) -> list[str]:
        return ["canvas"] if self.name is None else [self.name, "canvas"]

    def key(self, table: str) -> dg.AssetKey:
        return dg.AssetKey([*self.prefix, table])

    @property
    def group(self) -> str:
        return self.suffixed("canvas")

    @property
    def canvas_pool(self) -> str:
        """Backfills and terms refreshes that call the institution's Canvas share it, so
        parallel semesters do not throttle each other on one access token (limit in
        dagster.yaml); each institution's token has a pool of its own."""
        return self.suffixed("canvas_api")

    @property
    def semester_job(self) -> str:
        return self.suffixed(SEMESTER_JOB)

    def resource_key(self, kind: str) -> str:
        """``canvas`` / ``warehouse`` of this institution: ``canvas_north``, ..."""
        return self.suffixed(kind)
