"""kill -9 of workerd during the export, the read-back verification and the cleaning:
after each restart the pending alarm carries the run on, the archive holds every row exactly
once, and so do its listed Parquet files, with no unlisted file in R2 (the long version with 20+
kills at 1M rows is scripts/soak)."""

import random

from conftest import day, make_worker
from crashloop import run_with_kills

DATE = day(9)
OTHER = day(1)
ROWS = 150_000


def test_kill_9_in_every_phase_then_restart_completes_exactly(workdir):
    w = make_worker(workdir, vars={"STEP_ROWS": "10000", "PAGE_ROWS": "1000", "CLEAN_STEP_ROWS": "20000", "TEST_HOOKS": "1", "PARQUET": "true"})
    w.seed(DATE, ROWS)
    w.seed(OTHER, 1_000)
    other = w.rows(OTHER)
    try:
        out = run_with_kills(w, DATE, kills=3, rng=random.Random(7))
        assert [k.target for k in out.kills] == ["exporting", "verifying", "cleaning"], out.kills
        assert (out.lost, out.duplicated, out.altered, out.left_in_d1) == (0, 0, 0, 0), out
        assert (out.parquet_mismatched, out.parquet_duplicated, out.parquet_unlisted) == (0, 0, 0), out
        assert w.rows(OTHER) == other
        assert w.metadata(DATE)["d1_cleaned"] == 1
    finally:
        w.stop()
