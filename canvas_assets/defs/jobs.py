"""Jobs: the terms refresh, the per-semester backfill (UI backfills, auto-import and the nightly
reconciliation launch it), and the Live Events apply (see ``defs/apply.py``)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from canvas_assets.defs.apply import build_apply_job
from canvas_assets.defs.namespace import Namespace
from canvas_assets.settings import Settings
from canvas_assets.tables import SEMESTER_TABLES, TERMS, TableSpec

# Private import, for type hints only: dagster exports no name for what define_asset_job
# returns (an asset job resolved when the Definitions load), and no public base class covers it.
if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

TERMS_JOB = "canvas_terms_sync"
SEMESTER_JOB = "canvas_semester_sync"


@dataclass(frozen=True)
class Jobs:
    terms: "UnresolvedAssetJobDefinition"
    semester: "UnresolvedAssetJobDefinition"
    apply: dg.JobDefinition

    def all(self) -> list:
        return [self.terms, self.semester, self.apply]


def build_jobs(settings: Settings, tables: Sequence[TableSpec] = SEMESTER_TABLES) -> Jobs:
    namespace = Namespace.of(settings)
    return Jobs(
        terms=dg.define_asset_job(
            TERMS_JOB,
            selection=dg.AssetSelection.assets(namespace.key(TERMS.name)),
            description="Refresh the terms table from Canvas.",
        ),
        semester=dg.define_asset_job(
            SEMESTER_JOB,
            selection=dg.AssetSelection.assets(*(namespace.key(spec.name) for spec in tables)),
            description="Backfill one semester's tables from Canvas.",
            tags={"canvas-assets/source": "backfill"},
        ),
        apply=build_apply_job(settings, tables),
    )
