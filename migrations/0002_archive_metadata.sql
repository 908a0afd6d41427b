-- One row per archived date, written by that date's Durable Object. Operators query it directly:
--   SELECT * FROM archive_metadata WHERE date = '2026-11-20';
-- d1_cleaned = 1 only after a final count of the archived set in traffic_events was 0.
CREATE TABLE IF NOT EXISTS archive_metadata (
    date             TEXT PRIMARY KEY,          -- YYYY-MM-DD
    r2_path          TEXT,                      -- key of the newest generation's object in the ARCHIVE bucket
    record_count     INTEGER,                   -- rows in that generation's archive (verified against D1)
    file_size_bytes  INTEGER,                   -- size of that object (verified with a HEAD after complete())
    status           TEXT NOT NULL,             -- exporting | uploaded | cleaning | cleaned | failed | idle
    error_message    TEXT,                      -- last error, with what to do about it
    archived_at      INTEGER,                   -- unix ms: export of this generation started
    completed_at     INTEGER,                   -- unix ms: this generation reached cleaned
    d1_cleaned       INTEGER NOT NULL DEFAULT 0,
    generation       INTEGER NOT NULL DEFAULT 1, -- 1 for the first run of a date; late rows go to 2, 3, ...
    parts            INTEGER,                   -- multipart parts of the object
    checksum_crc32   TEXT,                      -- CRC-32 of the uncompressed JSONL (the gzip trailer's), hex
    first_id         TEXT,                      -- id range of the archived set
    last_id          TEXT,
    cutoff_created_at INTEGER,                  -- the archived set: event_date = date AND created_at < this
    rows_deleted     INTEGER NOT NULL DEFAULT 0,
    total_record_count INTEGER NOT NULL DEFAULT 0, -- rows archived over all generations of the date
    attempts         INTEGER NOT NULL DEFAULT 0,
    updated_at       INTEGER                    -- unix ms
);

CREATE INDEX IF NOT EXISTS idx_archive_metadata_status ON archive_metadata (status);

-- Liveness of the daily cron, for /admin/health.
CREATE TABLE IF NOT EXISTS archiver_heartbeat (
    name TEXT PRIMARY KEY,   -- 'cron' | 'first_seen'
    at   INTEGER NOT NULL    -- unix ms
);
