"""Jobs: the terms refresh of every institution (one run reads them all), each institution's
per-semester backfill (UI backfills, auto-import and the nightly reconciliation launch it), and
the Live Events apply (see ``defs/apply.py``)."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dagster as dg

from canvas_assets.defs.apply import build_apply_job
from canvas_assets.defs.assets import SOURCE_TAG
from canvas_assets.defs.namespace import Namespace
from canvas_assets.tables import SEMESTER_TABLES, TERMS, TableSpec

# Private import, for type hints only: dagster exports no name for what define_asset_job
# returns (an asset job resolved when the Definitions load), and no public base class covers it.
if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import (
        UnresolvedAssetJobDefinition,
    )

TERMS_JOB = "canvas_terms_sync"


@dataclass(frozen=True)
class Jobs:
    terms: "UnresolvedAssetJobDefinition"
    semesters: dict[str, "UnresolvedAssetJobDefinition"]  # by institution label
    apply: dg.JobDefinition

    def all(self) -> list:
        return [self.terms, *self.semesters.values(), self.apply]


def build_jobs(
    namespaces: Sequence[Namespace], tables: Sequence[TableSpec] = SEMESTER_TABLES
) -> Jobs:
    return Jobs(
        terms=dg.define_asset_job(
            TERMS_JOB,
            selection=dg.AssetSelection.assets(*(n.key(TERMS.name) for n in namespaces)),
            description="Refresh every institution's terms table from Canvas (one run, one "
            "step per institution).",
            executor_def=dg.in_process_executor,
        ),
        semesters={
            namespace.label: dg.define_asset_job(
                namespace.semester_job,
                selection=dg.AssetSelection.assets(*(namespace.key(s.name) for s in tables)),
                description=f"Backfill one semester of {namespace.label}'s tables from Canvas.",
                tags={SOURCE_TAG: "backfill"},
            )
            for namespace in namespaces
        },
        apply=build_apply_job(namespaces, tables),
    )
