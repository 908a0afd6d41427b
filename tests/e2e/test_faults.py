"""Faults on the real runtime: injected R2 and D1 failures (the FAULT_INJECT switch, which acts
only with TEST_HOOKS=1), an upload aborted from outside, an archive deleted before cleaning, late
rows, concurrent triggers, and a reset mid-export."""

import concurrent.futures as cf
import contextlib
import time
import urllib.parse

import pytest

from conftest import day, make_worker, running
from localworker import assert_same_rows

FAST = {"BACKOFF_BASE_MS": "300", "BACKOFF_MAX_MS": "2000", "MAX_ATTEMPTS": "3"}
LATE = "INSERT INTO traffic_events (id, path, method, client_ip_hash, timestamp, event_date) VALUES ('{id}', '/late', 'GET', 'h', 1, '{date}')"


def worker_with(tmp_path, date, rows, faults="none:0:0", **vars):
    return make_worker(tmp_path, seed={date: rows}, vars={**FAST, "TEST_HOOKS": "1", "FAULT_INJECT": faults, **vars})


@contextlib.contextmanager
def archiving(tmp_path, date, rows, faults="none:0:0", **vars):
    """A running Worker whose `date` was just triggered, and the date's rows as they were."""
    w = worker_with(tmp_path, date, rows, faults, **vars)
    expected = w.rows(date)
    with running(w):
        code, body = w.api("POST", f"/admin/trigger-archive?date={date}")
        assert code == 202, body
        yield w, expected


def run_to_end(w, date, timeout=240):
    st = w.wait_for(date, {"cleaned", "failed"}, timeout=timeout)
    assert st["phase"] == "cleaned", st
    return st


def test_a_failing_d1_call_is_retried_with_backoff(tmp_path):
    date = day(12)
    with archiving(tmp_path, date, 20_000, faults="d1:5:1") as (w, expected):
        st = run_to_end(w, date)
        assert "injected fault" in st["last_error"] and st["attempts"] == 0
        assert_same_rows(w.archive_rows(date), expected)
        assert w.count(date) == 0


def test_repeated_r2_failures_end_in_failed_then_a_trigger_resumes(tmp_path):
    date = day(13)
    # The day fits one part, so the first R2 call is the final put; it and the two retries fail.
    with archiving(tmp_path, date, 30_000, faults="r2:1:3", STEP_ROWS="10000") as (w, expected):
        seen_backoff = False
        deadline = time.time() + 120
        while (st := w.status(date))["phase"] != "failed":
            seen_backoff |= st["attempts"] > 0 and st["next_step_at"] is not None
            assert time.time() < deadline, st
            time.sleep(0.05)
        assert seen_backoff, "a failed step must wait for a backoff before its retry"
        assert (st["failed_in"], st["attempts"]) == ("exporting", 3)
        assert "injected fault" in st["last_error"]
        m = w.metadata(date)
        assert m["status"] == "failed" and "injected fault" in m["error_message"] and m["d1_cleaned"] == 0
        assert w.count(date) == 30_000, "nothing deleted"
        code, health = w.api("GET", "/admin/health")
        assert code == 503 and any(f"{date} failed" in r for r in health["reasons"]), health
        position = st["rows_exported"]
        # Three steps of 10,000 rows were saved; the fourth, which ends the stream with the
        # day's only (final) put, is the one that failed.
        assert position == 30_000
        code, body = w.api("POST", f"/admin/trigger-archive?date={date}")
        assert code == 202 and body["result"] == "resumed" and body["status"]["rows_exported"] == position
        run_to_end(w, date)
        assert_same_rows(w.archive_rows(date), expected)
        assert w.metadata(date)["status"] == "cleaned"


def test_an_upload_aborted_from_outside_restarts_the_export(tmp_path):
    date = day(14)
    with archiving(tmp_path, date, 200_000, STEP_ROWS="8000") as (w, expected):
        st = w.wait_until(date, lambda st: st["upload_id"] and st["parts_uploaded"] >= 1)
        q = urllib.parse.urlencode({"key": st["object_key"], "upload_id": st["upload_id"], "op": "abort"})
        assert w.api("POST", f"/admin/test/upload?{q}")[0] == 200
        st = run_to_end(w, date)
        assert "no longer exists" in st["last_error"], st
        assert_same_rows(w.archive_rows(date), expected)


def test_a_deleted_archive_stops_cleaning_and_nothing_is_deleted(tmp_path):
    date = day(15)
    w = worker_with(tmp_path, date, 5_000, AUTO_CLEANUP="false")
    with running(w):
        st = w.archive(date, until={"uploaded"})
        w.wrangler("r2", "object", "delete", f"traffic-archive/{st['object_key']}", "--local", "--persist-to", str(w.persist))
        # Read in place, the object is missing (404, as /admin/archive says), not damaged.
        code, body = w.api("GET", f"/admin/events?date={date}")
        assert code == 404 and "is not in R2" in body["message"], (code, body)
        code, body = w.api("POST", f"/admin/trigger-cleanup?date={date}")
        assert code == 202
        st = w.wait_for(date, {"failed"})
        assert "is missing; nothing more was deleted" in st["last_error"], st["last_error"]
        assert st["rows_deleted"] == 0 and w.count(date) == 5_000
        assert w.metadata(date)["status"] == "failed"


def test_late_rows_during_export_and_cleaning_are_never_lost_and_become_generation_2(tmp_path):
    date = day(16)
    # Small cleaning steps keep the date in `cleaning` for many alarms, so the rows inserted
    # below land while the pass runs, before its final count.
    with archiving(tmp_path, date, 150_000, STEP_ROWS="5000", CLEAN_STEP_ROWS="2000", AUTO_CLEANUP="false") as (w, expected):
        st = w.wait_until(date, lambda st: st["rows_exported"] >= 20_000)
        assert st["phase"] == "exporting"
        # Ids sort by event time: '0000…' sorts before the cursor, '9999…' after it.
        for rid in ("0000000000000-late-a", "9999999999999-late-b"):
            assert w.sql(LATE.format(id=rid, date=date)) == 1
        w.wait_for(date, {"uploaded"})
        # The scan read what was ahead of its cursor (late-b) and nothing behind it (late-a).
        ahead = {k: v for k, v in w.rows(date).items() if k == "9999999999999-late-b"}
        assert_same_rows(w.archive_rows(date), {**expected, **ahead})
        code, _ = w.api("POST", f"/admin/trigger-cleanup?date={date}")
        assert code == 202
        while w.status(date)["phase"] == "uploaded":
            time.sleep(0.01)
        for rid in ("0000000000000-late-c", "9999999999999-late-d"):
            assert w.sql(LATE.format(id=rid, date=date)) == 1
        assert w.status(date)["phase"] == "cleaning", "the rows must land while the pass runs"
        st = run_to_end(w, date)
        late = w.rows(date)
        assert sorted(late) == ["0000000000000-late-a", "0000000000000-late-c", "9999999999999-late-d"]
        assert st["rows_pending"] == 3 and w.metadata(date)["d1_cleaned"] == 0
        code, body = w.api("POST", f"/admin/trigger-archive?date={date}")
        assert code == 202 and body["status"]["generation"] == 2
        st = w.wait_for(date, {"uploaded"})
        w.api("POST", f"/admin/trigger-cleanup?date={date}")
        st = run_to_end(w, date)
        assert st["generation"] == 2 and st["object_key"].endswith("/0002.jsonl.gz")
        assert_same_rows(w.archive_rows(date, generation=2), late)
        assert w.count(date) == 0
        assert w.metadata(date)["total_record_count"] == 150_004
        assert w.metadata(date)["d1_cleaned"] == 1


def test_concurrent_triggers_and_crons_make_one_run(tmp_path):
    date = day(17)
    w = worker_with(tmp_path, date, 60_000, STEP_ROWS="5000")
    with running(w):
        with cf.ThreadPoolExecutor(max_workers=70) as pool:
            triggers = [pool.submit(w.api, "POST", f"/admin/trigger-archive?date={date}") for _ in range(50)]
            crons = [pool.submit(w.cron) for _ in range(20)]
            codes = [f.result()[0] for f in triggers]
            for f in crons:
                f.result()
        assert set(codes) == {202}, codes
        st = run_to_end(w, date)
        assert st["generation"] == 1 and len(st["generations"]) == 1
        keys = [k for k in w.keys(f"traffic_events/event_date={date}/") if k.endswith(".jsonl.gz")]
        assert keys == [f"traffic_events/event_date={date}/0001.jsonl.gz"], keys
        assert w.count(date) == 0


def test_a_reset_during_export_leaves_no_orphaned_upload(tmp_path):
    date = day(18)
    w = worker_with(tmp_path, date, 200_000, STEP_ROWS="8000")
    with running(w):
        w.api("POST", f"/admin/trigger-archive?date={date}")
        st = w.wait_until(date, lambda st: st["upload_id"])
        code, body = w.api("POST", f"/admin/reset?date={date}")
        assert code == 200 and body["status"]["phase"] == "idle", body
        q = urllib.parse.urlencode({"key": st["object_key"], "upload_id": st["upload_id"], "op": "probe"})
        code, body = w.api("POST", f"/admin/test/upload?{q}")
        assert code == 200 and body["alive"] is False, body
        time.sleep(1)
        assert w.status(date)["phase"] == "idle", "a step in flight must not resurrect the run"
        assert w.count(date) == 200_000
