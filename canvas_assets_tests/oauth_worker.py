"""One semester backfill in a process of its own, through a developer key: what a run launched
by the code server does. ``python -m canvas_assets_tests.oauth_worker '<json>'`` prints whether
it succeeded and when it started and ended."""

from __future__ import annotations

import json
import sys
import time

import dagster as dg

from canvas_assets.defs.canvas_oauth import OAuthCanvasResource
from canvas_assets.warehouse import WarehouseResource

from .backfills import backfill


def main(config: dict) -> None:
    warehouse = WarehouseResource(url=config["warehouse_url"], schema_name=config["schema"])
    canvas = OAuthCanvasResource(
        base_url=config["canvas_url"],
        client_id=config["client_id"],
        client_secret=config["client_secret"],
        refresh_token=config["refresh_token"],
        warehouse=warehouse,
    )
    started = time.time()
    with dg.DagsterInstance.ephemeral() as instance:
        result = backfill(canvas, warehouse, instance, config["semester"])
    print(json.dumps({"success": result.success, "started": started, "ended": time.time()}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
