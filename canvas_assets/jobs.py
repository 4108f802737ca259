"""Jobs: the terms refresh and the per-semester sync that UI backfills and sensors launch."""

import dagster as dg

from canvas_assets.assets import TABLE_KEYS, TERMS_KEY

terms_sync_job = dg.define_asset_job(
    "canvas_terms_sync",
    selection=dg.AssetSelection.assets(TERMS_KEY),
    description="Refresh canvas/terms from Canvas.",
)

semester_sync_job = dg.define_asset_job(
    "canvas_semester_sync",
    selection=dg.AssetSelection.assets(*TABLE_KEYS.values()),
    description="Backfill one semester's courses, sections, enrollments and users from Canvas.",
)
