-- canvas access token of a developer key
-- The current access token of the institution's developer-key authorisation (OAuth2), which
-- every process that talks to Canvas shares: a refresh regenerates the authorisation's one token,
-- so processes refreshing on their own would keep invalidating each other's. `authorisation` is
-- a SHA-256 of the client id and refresh token, so a reconnected deployment ignores the old row.
-- Only the owner (the code location's role) may read it: the grants that the schema's default
-- privileges gave other roles (readers, deploy/postgres/roles.sql) are taken back here.
CREATE TABLE {schema}.canvas_access_token (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    authorisation text NOT NULL,
    access_token text NOT NULL,
    expires_at timestamptz,
    refresh_at timestamptz,
    issued_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON {schema}.canvas_access_token FROM PUBLIC;
DO $$
DECLARE
    grantee text;
BEGIN
    FOR grantee IN
        SELECT DISTINCT pg_get_userbyid(acl.grantee)
          FROM pg_class AS c, aclexplode(c.relacl) AS acl
         WHERE c.oid = '{schema}.canvas_access_token'::regclass
           AND acl.grantee NOT IN (0, c.relowner)
    LOOP
        EXECUTE format('REVOKE ALL ON {schema}.canvas_access_token FROM %I', grantee);
    END LOOP;
END
$$;
