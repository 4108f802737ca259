-- alert incidents and their deliveries
-- One row per incident, at most one open per subject (a semester, the apply, the terms refresh,
-- a stream check, a semester's freshness): kept in the institution's schema, so a restarted
-- daemon finds the incidents it has already alerted.
CREATE TABLE {schema}.alert_incidents (
    id bigserial PRIMARY KEY,
    subject text NOT NULL,
    kind text NOT NULL,
    semester text,
    summary text NOT NULL,
    details text NOT NULL,
    link text,
    run_id text,
    run_at timestamptz,
    opened_at timestamptz NOT NULL,
    passing_since timestamptz,
    recovered_at timestamptz
);
CREATE UNIQUE INDEX alert_incidents_open ON {schema}.alert_incidents (subject)
    WHERE recovered_at IS NULL;
-- Each alert (an incident's failure or recovery) to each channel: sent, or waiting for its next
-- attempt after the channel refused it.
CREATE TABLE {schema}.alert_deliveries (
    id bigserial PRIMARY KEY,
    incident_id bigint NOT NULL REFERENCES {schema}.alert_incidents (id),
    status text NOT NULL CHECK (status IN ('failed', 'recovered')),
    channel text NOT NULL,
    created_at timestamptz NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    delivered_at timestamptz,
    last_error text
);
CREATE INDEX alert_deliveries_due ON {schema}.alert_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL;
