"""Authentication and bad input on the admin API: every bad request gets a 4xx JSON error that
says what to do, and changes nothing."""

import time

import pytest

from conftest import day, make_worker, running
from localworker import LocalWorker

DATE = day(8)


@pytest.fixture(scope="module")
def worker(workdir):
    w = make_worker(workdir)
    w.seed(DATE, 500)
    w.start()
    yield w
    w.stop()


@pytest.mark.parametrize("token", [None, "", "wrong", "e2e-token-012345678", "e2e-token-01234567890", "E2E-TOKEN-0123456789"])
def test_missing_or_wrong_token_is_401(worker, token):
    code, body = worker.api("GET", f"/admin/archive-status?date={DATE}", token=token)
    assert code == 401, body
    assert "Authorization: Bearer" in body["message"]


BAD = [
    ("GET", "/admin/archive-status", 400, "missing_date"),
    ("GET", "/admin/archive-status?date=2025-02-30", 400, "bad_date"),
    ("GET", "/admin/archive-status?date=2025-2-3", 400, "bad_date"),
    ("GET", "/admin/archive-status?date=20250203", 400, "bad_date"),
    ("GET", "/admin/archive-status?date=2025-13-01", 400, "bad_date"),
    ("GET", "/admin/archive-status?date=9999-01-01", 400, "future_date"),
    ("POST", f"/admin/trigger-archive?date={day(-1)}", 400, "future_date"),
    ("POST", "/admin/trigger-archive?date=2025-01-01%27%3B%20DROP%20TABLE%20traffic_events%3B--", 400, "bad_date"),
    ("POST", "/admin/trigger-archive?date=%E2%80%8B2025-01-01", 400, "bad_date"),
    ("POST", "/admin/trigger-archive?date=%F0%9F%98%80", 400, "bad_date"),
    ("GET", "/admin/archive-status?date=" + "9" * 17000, 414, "query_too_long"),
    ("GET", f"/admin/archive?date={DATE}&generation=0", 400, "bad_parameter"),
    ("GET", f"/admin/archive?date={DATE}&generation=abc", 400, "bad_parameter"),
    ("GET", f"/admin/reset?date={DATE}", 405, "method_not_allowed"),
    ("DELETE", f"/admin/trigger-archive?date={DATE}", 405, "method_not_allowed"),
    ("PUT", "/admin/dates", 405, "method_not_allowed"),
    ("GET", "/admin/nope", 404, "not_found"),
    ("GET", "/", 404, "not_found"),
    ("GET", f"/admin/archive?date={DATE}", 404, "no_archive"),
    # A parameter the route does not take, or given twice, is refused before anything runs: a
    # misspelt `generation` must not restore every generation.
    ("POST", f"/admin/trigger-archive?date={DATE}&forse=1", 400, "bad_parameter"),
    ("POST", f"/admin/restore?date={DATE}&generaton=2", 400, "bad_parameter"),
    ("POST", f"/admin/trigger-archive?date={DATE}&date={DATE}", 400, "bad_parameter"),
    ("POST", f"/admin/trigger-archive?date={day(1)}&force=on", 400, "bad_parameter"),
    ("GET", f"/admin/events?date={DATE}&from=1789394400", 400, "bad_parameter"),
]


@pytest.mark.parametrize("method,path,code,error", BAD)
def test_bad_input_is_a_4xx_json_error_and_changes_nothing(worker, method, path, code, error):
    before = worker.count(DATE), worker.query("SELECT count(*) FROM archive_metadata")[0][0]
    got, body = worker.api(method, path)
    assert (got, body["error"]) == (code, error), body
    assert len(body["message"]) > 20
    assert (worker.count(DATE), worker.query("SELECT count(*) FROM archive_metadata")[0][0]) == before
    assert worker.status(DATE)["phase"] == "idle"


def test_a_wrong_method_names_the_right_ones_and_head_serves_health(worker):
    code, headers, _ = worker.request("GET", f"/admin/reset?date={DATE}")
    assert code == 405 and headers["Allow"] == "POST", headers
    code, _, body = worker.request("HEAD", "/admin/health")
    assert code == 503 and body == b""


def test_health_is_503_while_an_old_date_waits_in_d1(worker):
    code, body = worker.api("GET", "/admin/health")
    assert code == 503 and body["ok"] is False
    assert any(DATE in r and "past its due time" in r for r in body["reasons"]), body


def test_rows_whose_event_date_is_no_date_are_named_by_health_and_listed_under_no_date(tmp_path):
    # An app that writes timestamps into event_date: health names them (no archive takes them),
    # and the scan of due dates passes over them a day at a time (one D1 query, on workerd's D1).
    w = make_worker(tmp_path, seed={DATE: 50})
    w.execute(
        "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 299) "
        "INSERT INTO traffic_events (id, path, method, status, response_time, client_ip_hash, timestamp, event_date) "
        f"SELECT 'ts-' || i, '/', 'GET', 200, 1.0, 'h', 7, '{DATE}T00:00:' || i FROM n")
    with running(w):
        code, body = w.api("GET", "/admin/health")
        assert code == 503 and any(f'"{DATE}T00:00:0"' in r and "no YYYY-MM-DD date" in r for r in body["reasons"]), body
        code, body = w.api("GET", "/admin/dates")
        assert code == 200 and body["pending"] == [DATE], body


def test_no_token_configured_is_503_with_instructions(tmp_path):
    w = LocalWorker(tmp_path, token=None)
    w.migrate()
    with running(w):
        code, body = w.api("GET", f"/admin/archive-status?date={DATE}", token="anything")
        assert code == 503
        assert "wrangler secret put ADMIN_TOKEN" in body["message"]


def test_a_bad_var_is_named_by_health_and_every_route_and_the_console_still_loads(tmp_path):
    w = make_worker(tmp_path, vars={"RETENTION_DAYS": "seven"})
    with running(w):
        code, body = w.api("GET", "/admin/health")
        assert code == 503 and body["ok"] is False, body
        assert any("RETENTION_DAYS" in r and "seven" in r for r in body["reasons"]), body
        assert w.request("HEAD", "/admin/health")[0] == 503
        code, body = w.api("GET", "/admin/dates")
        assert code == 500 and body["error"] == "bad_config" and "RETENTION_DAYS" in body["message"], body
        code, body = w.api("POST", f"/admin/trigger-archive?date={DATE}")
        assert code == 500 and body["error"] == "bad_config", body
        code, _, page = w.request("GET", "/admin/console", token=None)
        assert code == 200 and b"<html" in page.lower()
        code, body = w.api("GET", "/admin/health", token="wrong")
        assert code == 401, body


def test_vars_written_without_quotes_are_read_as_written_not_as_their_defaults(tmp_path):
    # wrangler hands `AUTO_CLEANUP = false` and `RETENTION_DAYS = 30` over as a boolean and a
    # number; read as missing, they would be the defaults (cleanup on, 3 days).
    date = day(40)
    w = make_worker(tmp_path, seed={date: 3_000}, vars={"AUTO_CLEANUP": False, "RETENTION_DAYS": 30})
    assert "AUTO_CLEANUP = false" in (w.config_dir / "wrangler.toml").read_text()
    with running(w):
        code, body = w.api("POST", f"/admin/trigger-archive?date={day(10)}")
        assert code == 409 and "30-day retention window" in body["message"], body
        st = w.archive(date, until={"uploaded", "cleaned", "failed"})
        assert st["phase"] == "uploaded", st
        time.sleep(2)
        st = w.status(date)
        assert st["phase"] == "uploaded" and w.count(date) == 3_000, st
