#!/bin/sh
# Run by the postgres image once, when its data volume is first created: the least-privilege
# roles and databases of ../../postgres/roles.sql, with passwords from the container environment.
set -eu
psql --username "$POSTGRES_USER" --dbname postgres -v ON_ERROR_STOP=1 \
  -v dagster_db=dagster -v dagster_role=dagster \
  -v dagster_password="$DAGSTER_POSTGRES_PASSWORD" \
  -v warehouse_db=canvas -v warehouse_schema="$CANVAS_WAREHOUSE_SCHEMA" \
  -v warehouse_role=canvas_warehouse -v warehouse_password="$CANVAS_WAREHOUSE_PASSWORD" \
  -v reader_role=canvas_reader \
  -f /opt/canvas-assets/roles.sql
