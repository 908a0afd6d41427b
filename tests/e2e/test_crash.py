"""kill -9 of workerd in the middle of an export: after a restart the pending alarm carries the
run on, and the archive holds every row exactly once."""

import time

from conftest import day, make_worker
from localworker import assert_same_rows

DATE = day(9)
ROWS = 120_000


def test_kill_9_mid_export_then_restart_completes_exactly(workdir):
    w = make_worker(workdir, vars={"STEP_ROWS": "10000", "PAGE_ROWS": "1000"})
    w.seed(DATE, ROWS)
    expected = w.rows(DATE)
    w.start()
    try:
        code, body = w.api("POST", f"/admin/trigger-archive?date={DATE}")
        assert code == 202, body
        deadline = time.time() + 120
        while True:
            st = w.status(DATE)
            if st["phase"] == "exporting" and st["rows_exported"] >= 20_000:
                break
            assert st["phase"] in ("exporting", "idle"), f"finished before the kill: {st}"
            assert time.time() < deadline
            time.sleep(0.05)
        w.stop(kill=True)  # SIGKILL to wrangler and workerd: no shutdown of any kind
        assert w.count(DATE) == ROWS
        w.start()
        st = w.wait_for(DATE, {"cleaned", "failed"})
        assert st["phase"] == "cleaned", st
        assert_same_rows(w.archive_rows(DATE), expected)
        assert w.count(DATE) == 0
        assert w.metadata(DATE)["d1_cleaned"] == 1
    finally:
        w.stop()
