-- live events from a shared queue, and how applying them goes
-- A quarantined message keeps the institution it named (a shared queue's message from an
-- institution not declared yet), so it can be replayed once the institution is added.
ALTER TABLE {schema}.live_event_quarantine
    ADD COLUMN root_account_uuid text,
    ADD COLUMN replayed_at timestamptz;
CREATE INDEX live_event_quarantine_unreplayed ON {schema}.live_event_quarantine (root_account_uuid)
    WHERE root_account_uuid IS NOT NULL AND replayed_at IS NULL;
-- One row: the institution's last Live Events apply pass, so the sensor can tell a failing
-- institution (its runs are kept apart) from a healthy one.
CREATE TABLE {schema}.live_events_apply_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_attempt_at timestamptz,
    last_success_at timestamptz,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error text
);
INSERT INTO {schema}.live_events_apply_state DEFAULT VALUES;
