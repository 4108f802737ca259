"""Jobs: the terms refresh and the per-semester sync that UI backfills and sensors launch."""

import dagster as dg

from canvas_assets.defs.reporting import table_key
from canvas_assets.tables import SEMESTER_TABLES, TERMS

terms_sync_job = dg.define_asset_job(
    "canvas_terms_sync",
    selection=dg.AssetSelection.assets(table_key(TERMS.name)),
    description="Refresh canvas/terms from Canvas.",
)

semester_sync_job = dg.define_asset_job(
    "canvas_semester_sync",
    selection=dg.AssetSelection.assets(*(table_key(spec.name) for spec in SEMESTER_TABLES)),
    description="Backfill one semester's tables from Canvas, or apply its Live Events.",
)
