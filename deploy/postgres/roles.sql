-- Least-privilege PostgreSQL roles for one canvas-assets deployment (one institution).
--
-- Run once per institution as an administrator (a superuser, or RDS's master user), with psql:
--
--   psql "$ADMIN_URL" -v ON_ERROR_STOP=1 \
--     -v dagster_db=dagster -v dagster_role=dagster \
--     -v dagster_password="$DAGSTER_POSTGRES_PASSWORD" \
--     -v warehouse_db=canvas -v warehouse_schema=canvas \
--     -v warehouse_role=canvas_warehouse -v warehouse_password="$CANVAS_WAREHOUSE_PASSWORD" \
--     -v reader_role=canvas_reader \
--     -f deploy/postgres/roles.sql
--
-- Passwords are psql variables read from the environment, never written in this file. Re-running
-- is safe: what exists is left alone (passwords included; change one with ALTER ROLE).
--
-- What each role can do, and nothing more (canvas_assets_tests/test_least_privilege.py checks it):
--   dagster_role    owns the Dagster storage database (runs, events, schedules, partitions);
--                   dagster-postgres creates and migrates its tables there. No other database.
--   warehouse_role  owns one schema of the warehouse database: creates, migrates, writes its
--                   tables (with TEMP tables for COPY). It cannot create schemas, read or write
--                   any other schema, or connect to the Dagster database.
--   reader_role     NOLOGIN group for whoever reads the tables (a CRM integration, analysts):
--                   SELECT on the schema's tables, present and future, except
--                   canvas_access_token (a developer key's current Canvas access token, which
--                   only the code location reads). Grant it to login roles.
-- A vendor's deployment (one code location, CANVAS_INSTITUTIONS_FILE): run this once per
-- institution's schema, and once for the shared schema (CANVAS_SHARED_SCHEMA), with the same
-- warehouse_role (the code location's one CANVAS_WAREHOUSE_URL) and a reader_role per schema,
-- so each partner's readers see only their own institution.

\set ON_ERROR_STOP on

-- Roles, created only when missing.
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOCREATEDB NOCREATEROLE',
              :'dagster_role', :'dagster_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'dagster_role') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOCREATEDB NOCREATEROLE',
              :'warehouse_role', :'warehouse_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'warehouse_role') \gexec
SELECT format('CREATE ROLE %I NOLOGIN', :'reader_role')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'reader_role') \gexec

-- An administrator that is not a superuser (RDS) must be a member of a role to give it objects.
GRANT :"dagster_role", :"warehouse_role" TO CURRENT_USER;

-- Dagster storage: a database the Dagster role owns; nobody else may connect.
SELECT format('CREATE DATABASE %I OWNER %I', :'dagster_db', :'dagster_role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'dagster_db') \gexec
REVOKE ALL ON DATABASE :"dagster_db" FROM PUBLIC;

-- Warehouse: the database belongs to the administrator; the warehouse role may connect and use
-- temporary tables, the reader role may connect.
SELECT format('CREATE DATABASE %I', :'warehouse_db')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'warehouse_db') \gexec
REVOKE ALL ON DATABASE :"warehouse_db" FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE :"warehouse_db" TO :"warehouse_role";
GRANT CONNECT ON DATABASE :"warehouse_db" TO :"reader_role";

\connect :"warehouse_db"
-- PostgreSQL before 15 lets every role create tables in `public`.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA IF NOT EXISTS :"warehouse_schema" AUTHORIZATION :"warehouse_role";
GRANT USAGE ON SCHEMA :"warehouse_schema" TO :"reader_role";
GRANT SELECT ON ALL TABLES IN SCHEMA :"warehouse_schema" TO :"reader_role";
ALTER DEFAULT PRIVILEGES FOR ROLE :"warehouse_role" IN SCHEMA :"warehouse_schema"
    GRANT SELECT ON TABLES TO :"reader_role";
-- The Canvas access token is the code location's alone. Its migration takes back what the
-- default privileges give; a second run of this file must not give it back.
SELECT format('REVOKE ALL ON TABLE %I.canvas_access_token FROM %I',
              :'warehouse_schema', :'reader_role')
 WHERE to_regclass(format('%I.canvas_access_token', :'warehouse_schema')) IS NOT NULL \gexec

REVOKE :"dagster_role", :"warehouse_role" FROM CURRENT_USER;
