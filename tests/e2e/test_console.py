"""The operator console in a real headless Chromium (Debian's, driven by Playwright), against the
real Worker on local workerd: a wrong token refused, log in, archive and clean a date, follow it
to cleaned, trigger and reset a date, see a failed date's advice, a date inside retention
archived only when asked twice, a phone-width screen."""

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import day, make_worker, running

from playwright import sync_api as playwright  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS = Path(__file__).resolve().parents[2] / "docs"

DONE, BIG, BROKEN = day(30), day(31), day(32)


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    # Steps of 1,000 rows keep BIG in `exporting` for many seconds (200 steps), so the page,
    # refreshing every 2 s, sees it there whatever the machine's speed.
    w = make_worker(tmp_path_factory.mktemp("console"), vars={"AUTO_CLEANUP": "false", "STEP_ROWS": "1000"},
                    seed={DONE: 20_000, BIG: 200_000, BROKEN: 20_000})
    with running(w):
        yield w


@pytest.fixture(scope="module")
def page(worker, tmp_path_factory):
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1280, "height": 900})
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        pg.goto(f"http://127.0.0.1:{worker.port}/admin/")
        yield pg
        browser.close()


def row(page, date):
    return page.locator(f'tr[data-date="{date}"]')


def act(page, date, action):
    row(page, date).locator(f'button[data-action="{action}"]').click()
    page.locator("#confirmOk").click()


def test_a_wrong_token_is_refused(page):
    page.fill("#token", "not-the-token")
    page.click("#login button[type=submit]")
    page.wait_for_selector("#loginError:has-text('401')")
    assert page.locator("#app").is_hidden()


def test_log_in_and_see_every_date_and_health(page, worker):
    page.fill("#token", worker.token)
    page.click("#login button[type=submit]")
    page.wait_for_selector(f'tr[data-date="{DONE}"]')
    for d in (DONE, BIG, BROKEN):
        assert row(page, d).get_attribute("data-phase") == "pending"
    assert "D1 still holds rows" in page.locator("#health").inner_text()


def test_archive_and_clean_a_date_and_watch_it_reach_cleaned(page, worker, tmp_path):
    act(page, DONE, "trigger")
    page.wait_for_selector(f'tr[data-date="{DONE}"][data-phase="uploaded"]')
    act(page, DONE, "cleanup")
    page.wait_for_selector(f'tr[data-date="{DONE}"][data-phase="cleaned"]')
    text = row(page, DONE).inner_text()
    assert "20,000 archived" in text and "0 still in D1" in text and "#1" in text
    assert worker.count(DONE) == 0
    # The README's picture of the console is refreshed only when asked (`SCREENSHOT=docs`), so
    # that running the tests never changes the tracked tree.
    shot = (DOCS if os.environ.get("SCREENSHOT") == "docs" else tmp_path) / "console.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG")


def test_every_confirmation_says_what_will_happen(page):
    for action, words in [("cleanup", "Cannot be undone"), ("reset", "Nothing in D1 is deleted"), ("restore", "never over a different row")]:
        row(page, DONE).locator(f'button[data-action="{action}"]').click()
        assert words in page.locator("#confirm").inner_text()
        page.locator('#confirm button[value="cancel"]').click()
    assert row(page, DONE).get_attribute("data-phase") == "cleaned"


def test_download_a_generation(page, worker):
    with page.expect_download() as d:
        row(page, DONE).locator("a.dl").first.click()
    status, _, body = worker.request("GET", f"/admin/archive?date={DONE}&generation=1")
    assert status == 200 and Path(d.value.path()).read_bytes() == body
    assert d.value.suggested_filename.endswith(".jsonl.gz")


def test_a_refused_download_shows_the_apis_message(page):
    # As a stale page would ask for a generation the date no longer has.
    page.evaluate(f"download('{DONE}', 9, 'x/0009.jsonl.gz')")
    page.wait_for_selector("#toast:has-text('download failed')")
    text = page.locator("#toast").inner_text()
    assert "generation 9" in text and "HTTP" not in text, text


def test_restore_and_release_a_date(page, worker):
    act(page, DONE, "restore")
    page.wait_for_selector(f'tr[data-date="{DONE}"][data-phase="restored"]')
    assert "restored lines 20,000 / 20,000" in row(page, DONE).inner_text()
    assert worker.count(DONE) == 20_000
    act(page, DONE, "release")
    page.wait_for_selector(f'tr[data-date="{DONE}"][data-phase="cleaned"]')
    assert worker.count(DONE) == 0
    assert "released 20,000 / 20,000" in row(page, DONE).inner_text()
    assert worker.status(DONE)["rows_released"] == 20_000


def test_trigger_and_reset_a_date(page, worker):
    act(page, BIG, "trigger")
    page.wait_for_selector(f'tr[data-date="{BIG}"][data-phase="exporting"]')
    assert "so far" in row(page, BIG).locator('[data-bar="exported"]').inner_text()
    act(page, BIG, "reset")
    page.wait_for_selector("#toast:has-text('was_reset')")
    page.wait_for_selector(f'tr[data-date="{BIG}"][data-phase="idle"]')
    assert worker.count(BIG) == 200_000


def test_a_failed_date_shows_its_advice_and_refusals_show_the_message(page, worker):
    act(page, BROKEN, "trigger")
    page.wait_for_selector(f'tr[data-date="{BROKEN}"][data-phase="uploaded"]')
    worker.flip_byte(worker.status(BROKEN)["object_key"], at=0.5, mask=1)
    act(page, BROKEN, "cleanup")
    page.wait_for_selector(f'tr[data-date="{BROKEN}"][data-phase="failed"]')
    err = row(page, BROKEN).locator(".err").inner_text()
    assert "does not match its index" in err and "POST /admin/reset" in err
    # A refused action shows the API's message.
    act(page, DONE, "release")
    page.wait_for_selector("#toast:has-text('no restored rows')")


def test_a_date_inside_retention_is_archived_only_when_asked_twice_and_esc_never_confirms(page, worker):
    recent = day(1)
    # A date archived early by hand has a row (it has no rows in D1: the export finds nothing,
    # leaves nothing in R2, and ends idle).
    st = worker.archive(recent, until={"idle", "cleaned", "uploaded"}, force=True)
    assert (st["phase"], st["generations"]) == ("idle", []), st
    sent = []
    page.on("request", lambda r: sent.append(r.url) if "trigger-archive" in r.url else None)
    page.reload()
    page.wait_for_selector(f'tr[data-date="{recent}"]')
    act(page, recent, "trigger")
    # The API refused (inside retention); the page asks again, saying why. A confirmed dialog
    # came just before: Esc must not reuse its answer.
    page.wait_for_selector("#confirm[open]:has-text('retention window')")
    page.keyboard.press("Escape")
    page.wait_for_selector("#confirm:not([open])", state="attached")
    page.wait_for_timeout(500)
    assert len(sent) == 1 and "force" not in sent[0], sent
    act(page, recent, "trigger")
    page.wait_for_selector("#confirm[open]:has-text('retention window')")
    page.locator("#confirmOk").click()
    page.wait_for_selector(f"#toast:has-text('Archive {recent}')")
    assert len(sent) == 3 and sent[2].endswith("&force=1"), sent


def test_phone_width(page):
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.wait_for_selector(f'tr[data-date="{DONE}"]')
    assert page.evaluate("document.documentElement.scrollWidth") <= 400
    assert row(page, DONE).locator('button[data-action="trigger"]').is_visible()


def test_a_date_whose_status_answers_an_error_says_so(page):
    # As the object of a date whose saved state this code cannot read answers: the page draws
    # the date from its metadata, and says what the object answered.
    message = f"saved state of {DONE} is unreadable (test); deploy a version that reads it"
    page.route(f"**/admin/archive-status?date={DONE}",
               lambda route: route.fulfill(status=500, content_type="application/json",
                                           body=json.dumps({"error": "corrupt_state", "message": message})))
    try:
        page.reload()
        page.wait_for_selector(f"#toast:has-text('status of {DONE}')")
        assert "unreadable (test)" in page.locator("#toast").inner_text()
        assert row(page, DONE).is_visible()
    finally:
        page.unroute(f"**/admin/archive-status?date={DONE}")
