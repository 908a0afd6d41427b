-- The record revision each archive_metadata row describes. A date's Durable Object can have two
-- metadata writes on their way to D1 at once (a step's, and an operator's command served while
-- the step awaited D1); the row keeps the newer by (updated_at, revision), and archive_objects
-- is changed only by the write the row kept, so a late older write changes nothing.
ALTER TABLE archive_metadata ADD COLUMN revision INTEGER;  -- the Durable Object record's revision
