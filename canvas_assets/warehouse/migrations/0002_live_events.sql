-- live events landing and quarantine
CREATE TABLE {schema}.live_events (
    seq bigserial PRIMARY KEY,
    event_key text NOT NULL UNIQUE,
    message_id text,
    event_name text NOT NULL,
    event_time timestamptz NOT NULL,
    supported boolean NOT NULL,
    course_id bigint,
    section_id bigint,
    enrollment_id bigint,
    user_id bigint,
    semester text,
    envelope jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    applied_at timestamptz,
    outcome text
);
CREATE INDEX live_events_pending ON {schema}.live_events (semester, seq)
    WHERE applied_at IS NULL;
CREATE TABLE {schema}.live_event_quarantine (
    id bigserial PRIMARY KEY,
    raw_key text NOT NULL UNIQUE,
    message_id text,
    reason text NOT NULL,
    raw text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
