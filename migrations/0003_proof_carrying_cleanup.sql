-- Version 2 of the archiver: rows are deleted only against lines read back from R2.

-- One row per archive object in R2, written after every save of its date's record: the table
-- always lists exactly the objects the archiver knows to exist (a reset's object is removed
-- from here when it is removed from R2).
--   SELECT key, state, rows, bytes FROM archive_objects WHERE date = '2026-11-20';
CREATE TABLE IF NOT EXISTS archive_objects (
    key                TEXT PRIMARY KEY,          -- R2 key of the object (.jsonl.gz or .parquet)
    date               TEXT NOT NULL,             -- YYYY-MM-DD
    generation         INTEGER NOT NULL,
    format             TEXT NOT NULL,             -- 'jsonl.gz', or 'parquet' (PARQUET=true: one file per export step)
    state              TEXT NOT NULL,             -- verifying | verified | cleaning | cleaned | partly_cleaned
    rows               INTEGER NOT NULL,
    bytes              INTEGER NOT NULL,
    uncompressed_bytes INTEGER NOT NULL,
    checksum_crc32     TEXT NOT NULL,             -- CRC-32 of the uncompressed JSONL (the gzip trailer's), hex; parquet: of the file
    parts              INTEGER NOT NULL,
    pieces             INTEGER NOT NULL,          -- entries of the seek index (parquet: row groups)
    index_key          TEXT NOT NULL,             -- R2 key of the sidecar seek index (NNNN.index.json); '' for parquet
    rows_deleted       INTEGER NOT NULL DEFAULT 0,-- rows deleted from D1 against this object's lines
    created_at         INTEGER,                   -- unix ms: the object was completed
    verified_at        INTEGER,                   -- unix ms: read back and checked piece by piece
    cleaned_at         INTEGER,                   -- unix ms: a cleaning pass went through every piece
    updated_at         INTEGER
);
CREATE INDEX IF NOT EXISTS idx_archive_objects_date ON archive_objects (date, generation);

-- One row per batch of a pass over an archive (cleaning, restore, release), written in the same
-- D1 transaction as the batch's DELETE or INSERT: a batch that runs again (an alarm is
-- at-least-once) finds its row and changes nothing, and `rows` is what it changed.
CREATE TABLE IF NOT EXISTS archive_ledger (
    pass   TEXT NOT NULL,     -- '<object key>#clean-N' | '#release-N' | '#restore-N'
    piece  INTEGER NOT NULL,  -- index of the piece in the object's seek index
    batch  INTEGER NOT NULL,  -- batch within the piece
    rows   INTEGER NOT NULL,  -- rows deleted or inserted
    date   TEXT NOT NULL,
    at     INTEGER NOT NULL,  -- unix ms
    PRIMARY KEY (pass, piece, batch)
);
CREATE INDEX IF NOT EXISTS idx_archive_ledger_date ON archive_ledger (date);

-- archive_metadata keeps its columns and gains what version 2 knows.
ALTER TABLE archive_metadata ADD COLUMN rows_pending INTEGER;   -- rows of the date left in D1 after the last cleaning pass; 0 with d1_cleaned = 1
ALTER TABLE archive_metadata ADD COLUMN rows_restored INTEGER;  -- rows a restore inserted (while restoring or held)
ALTER TABLE archive_metadata ADD COLUMN hold_until INTEGER;     -- unix ms: restored rows are held until then
ALTER TABLE archive_metadata ADD COLUMN next_step_at INTEGER;   -- unix ms: the date's next alarm
