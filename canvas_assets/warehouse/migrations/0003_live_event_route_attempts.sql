-- live event routing attempts
ALTER TABLE {schema}.live_events
    ADD COLUMN route_attempts integer NOT NULL DEFAULT 0;
