"""End to end on local workerd: two dates, one archived by the real cron handler, the other by
the admin API; archives compared row by row with what D1 held; D1 and metadata checked."""

import pytest

from conftest import day, make_worker
from localworker import assert_same_rows

DUE = day(6)       # past the 3-day retention: the cron picks it
RECENT = day(1)    # inside retention: only the admin API with force=1 archives it
ROWS = 40_000


@pytest.fixture(scope="module")
def worker(workdir):
    w = make_worker(workdir, vars={"STEP_ROWS": "15000", "CLEAN_STEP_ROWS": "15000"})
    w.seed(DUE, ROWS)
    w.seed(RECENT, ROWS // 4)
    # Hostile values the archive must return byte-exact.
    w.execute(
        "INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, user_agent, country, timestamp, event_date, is_error, created_at) VALUES "
        f"('0-edge-1', '/q?x=''1'' OR 1=1;--', 'GET', 200, 0.30000000000000004, 'h', 'emoji 😀 中文 \"quoted\" back\\\\slash ' || char(1) || char(9) || char(10), NULL, 9007199254740993, '{DUE}', 0, unixepoch() - 3600),"
        f"('0-edge-2', '/', 'GET', 500, 1e300, 'h', NULL, NULL, -9007199254740993, '{DUE}', 1, unixepoch() - 3600),"
        f"('0-edge-3', '/', 'POST', 200, 5e-324, 'h', printf('%.*c', 100000, 'A'), 'JP', 9007199254740991, '{DUE}', 0, unixepoch() - 3600),"
        # NULL in every nullable column, created_at included.
        f"('0-edge-4', '/', 'GET', 200, 0, 'h', NULL, NULL, 9007199254740992, '{DUE}', 0, NULL)"
    )
    w.start()
    yield w
    w.stop()


def test_cron_archives_the_due_date_exactly_and_leaves_the_recent_one(worker):
    expected = worker.rows(DUE)
    recent_before = worker.rows(RECENT)
    assert len(expected) == ROWS + 4
    worker.cron()
    st = worker.wait_for(DUE, {"cleaned", "failed"})
    assert st["phase"] == "cleaned", st
    assert st["rows_exported"] == st["rows_deleted"] == ROWS + 4 and st["rows_pending"] == 0
    assert st["object_key"] == f"traffic_events/event_date={DUE}/0001.jsonl.gz"
    assert st["stats"]["steps"] >= 5, "a 40k-row day must take several bounded steps"
    s = st["stats"]
    assert s["export_sql_us"] > 0 and s["clean_sql_us"] > 0 and s["restore_sql_us"] == 0, "D1's own time per phase"

    assert_same_rows(worker.archive_rows(DUE), expected)
    assert worker.count(DUE) == 0
    assert worker.rows(RECENT) == recent_before, "the recent date must be untouched"
    assert worker.status(RECENT)["phase"] == "idle"

    m = worker.metadata(DUE)
    assert (m["d1_cleaned"], m["record_count"], m["status"], m["generation"]) == (1, ROWS + 4, "cleaned", 1)
    assert m["file_size_bytes"] == st["bytes_uploaded"] > 0
    assert m["r2_path"] == st["object_key"]


def test_admin_api_archives_a_recent_date_only_with_force(worker):
    code, body = worker.api("POST", f"/admin/trigger-archive?date={RECENT}")
    assert code == 409 and body["error"] == "inside_retention" and "force=1" in body["message"]
    expected = worker.rows(RECENT)
    code, body = worker.api("GET", f"/admin/trigger-archive?date={RECENT}&force=1")  # runbooks use GET
    assert code == 202, body
    assert body["status"]["phase"] == "exporting"
    st = worker.wait_for(RECENT, {"cleaned", "failed"})
    assert st["phase"] == "cleaned", st
    assert_same_rows(worker.archive_rows(RECENT), expected)
    assert worker.count(RECENT) == 0
    # Triggering again is harmless: nothing new, no new generation.
    code, body = worker.api("POST", f"/admin/trigger-archive?date={RECENT}&force=1")
    assert code == 202
    st = worker.wait_for(RECENT, {"cleaned"})
    assert st["generation"] == 1


def test_listing_health_and_refusals(worker):
    worker.wait_for(DUE, {"cleaned"})
    code, body = worker.api("GET", "/admin/dates")
    assert code == 200
    assert {d["date"]: d["phase"] for d in body["dates"]}[DUE] == "cleaned"
    code, body = worker.api("POST", f"/admin/reset?date={DUE}")
    assert code == 200 and body["result"] == "nothing_to_reset", body
    assert len(worker.archive_rows(DUE)) == ROWS + 4, "a reset never deletes a cleaned archive"
    code, body = worker.api("POST", f"/admin/trigger-cleanup?date={DUE}")
    assert code == 200 and body["result"] == "already_cleaned"
    code, body = worker.api("POST", f"/admin/trigger-cleanup?date={day(10)}")
    assert code == 409 and "trigger-archive" in body["message"], body
    code, body = worker.api("GET", "/admin/health")
    assert code == 200, body
    assert body["ok"] is True and body["last_cron_run"]
