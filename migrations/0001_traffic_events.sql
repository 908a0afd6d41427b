-- The table the analytics app writes: one row per HTTP request it saw.
-- Column set and defaults are the app's; the archiver only adds indexes.
CREATE TABLE IF NOT EXISTS traffic_events (
    id             TEXT PRIMARY KEY,          -- idempotency id, e.g. '1730956800000-a1b2c3d4'; sorts by event time
    path           TEXT NOT NULL,
    method         TEXT NOT NULL,
    status         INTEGER NOT NULL DEFAULT 200,
    response_time  REAL NOT NULL DEFAULT 0,   -- milliseconds
    client_ip_hash TEXT NOT NULL,
    user_agent     TEXT,
    country        TEXT,
    timestamp      INTEGER NOT NULL,          -- unix milliseconds
    event_date     TEXT NOT NULL,             -- YYYY-MM-DD
    is_error       INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER DEFAULT (unixepoch()) -- unix seconds at insert, from D1's own clock
);

-- The export scan and the cleaning deletes walk one date in id order (keyset pagination):
-- WHERE event_date = ? AND id > ? ORDER BY id. This index serves both, and lets the cron
-- find the next old date with a single seek.
CREATE INDEX IF NOT EXISTS idx_traffic_events_date_id ON traffic_events (event_date, id);
