"""The PostgreSQL warehouse: the resource (embedded or by URL), versioned migrations, the
COPY/upsert/soft-delete writes, and the Imported Semesters card."""

from canvas_assets.warehouse.resource import WarehouseError, WarehouseResource
from canvas_assets.warehouse.writes import WriteCounts

__all__ = ["WarehouseError", "WarehouseResource", "WriteCounts"]
