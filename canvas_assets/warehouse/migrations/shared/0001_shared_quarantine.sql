-- the shared queue's quarantine
-- Messages of a shared queue that belong to no declared institution (or name none that can be
-- read): kept with the reason and the raw text, and replayed into an institution once it is
-- declared (root_account_uuid).
CREATE TABLE {schema}.live_event_quarantine (
    id bigserial PRIMARY KEY,
    raw_key text NOT NULL UNIQUE,
    message_id text,
    reason text NOT NULL,
    raw text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    root_account_uuid text,
    replayed_at timestamptz
);
CREATE INDEX live_event_quarantine_unreplayed ON {schema}.live_event_quarantine (root_account_uuid)
    WHERE root_account_uuid IS NOT NULL AND replayed_at IS NULL;
