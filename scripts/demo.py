"""scripts/demo's body: one day archived end to end on local workerd, with a progress bar."""

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localworker import ROOT, LocalWorker, single_member_gunzip  # noqa: E402


def bar(done: int, total: int, width: int = 32) -> str:
    frac = 0 if total == 0 else min(1.0, done / total)
    return "[" + "#" * int(frac * width) + "." * (width - int(frac * width)) + f"] {frac:6.1%}"


def mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--count", type=int, default=100_000, help="rows to seed (default 100000)")
    p.add_argument("--date", default=(dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=5)).isoformat(),
                   help="the past day to archive (default: 5 days ago)")
    p.add_argument("--keep", action="store_true", help="leave the Worker running at the end")
    a = p.parse_args()

    token = next(l.split("=", 1)[1].strip() for l in (ROOT / ".dev.vars").read_text().splitlines() if l.startswith("ADMIN_TOKEN="))
    workdir = ROOT / ".wrangler" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    w = LocalWorker(workdir, token=token)
    print(f"==> fresh local state in {workdir}")
    w.migrate()
    t = time.time()
    w.seed(a.date, a.count)
    recent = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=1)).isoformat()
    w.seed(recent, 1000)  # inside the retention window: the cron must leave it alone
    print(f"==> seeded {a.count:,} events for {a.date} in {time.time() - t:.1f} s")
    w.start()
    print(f"==> Worker running on http://127.0.0.1:{w.port} (wrangler dev, local workerd)")
    print(f"==> operator console: http://127.0.0.1:{w.port}/admin/   token: {token}")
    try:
        print("==> firing the daily cron (GET /cdn-cgi/handler/scheduled)")
        started = time.time()
        w.cron()
        st = {}
        while True:
            st = w.status(a.date)
            phase = st["phase"]
            if phase in ("cleaning", "cleaned"):
                label, done, total, unit = "cleaning ", st["rows_deleted"], a.count, "rows"
            elif phase == "verifying":
                label, done, total, unit = "verifying", st["pieces_verified"], st["pieces"], "pieces"
            else:
                label, done, total, unit = "exporting", st["rows_exported"], a.count, "rows"
            print(f"\r    {label} {bar(done, total)} {done:>10,} {unit:<6} phase={phase:<10} steps={st['stats']['steps']:<4}", end="", flush=True)
            if phase in ("cleaned", "failed"):
                break
            time.sleep(0.2)
        print()
        elapsed = time.time() - started
        if st["phase"] != "cleaned":
            print(f"!!  the run stopped: {st['last_error']}")
            return 1
        s = st["stats"]
        out = ROOT / f"demo-{a.date}.jsonl.gz"
        code, headers, body = w.request("GET", f"/admin/archive?date={a.date}")
        out.write_bytes(body)
        lines = single_member_gunzip(body).count(b"\n")
        print("==> summary")
        rows = [
            ("rows archived and deleted", f"{st['rows_exported']:,} (archive holds {lines:,} lines; D1 now holds {w.count(a.date):,} rows of {a.date})"),
            ("left alone", f"{w.count(recent):,} rows of {recent} (inside the retention window)"),
            ("archive", f"{st['object_key']}  {mib(st['bytes_uploaded'])} in {st['parts_uploaded']} part(s)"),
            ("compression", f"{mib(st['uncompressed_bytes'])} JSONL -> {mib(st['bytes_uploaded'])}  ({st['uncompressed_bytes'] / max(1, st['bytes_uploaded']):.1f}x, {st['bytes_uploaded'] / max(1, st['rows_exported']):.1f} B/row)"),
            ("time", f"{elapsed:.1f} s end to end ({st['rows_exported'] / elapsed:,.0f} rows/s)"),
            ("alarm steps", f"{s['steps']} (longest {s['longest_step_ms']} ms)"),
            ("peak wasm memory", f"{mib(st['peak_wasm_memory_bytes'])} (largest step buffer {mib(s['max_buffer_bytes'])})"),
            ("D1 rows read", f"{s['export_rows_read'] / max(1, st['rows_exported']):.3f} per archived row (export scan)"),
            ("D1 running SQL", f"{s['export_sql_us'] / 1e6:.1f} s of the export, {s['clean_sql_us'] / 1e6:.1f} s of cleaning"),
            ("archive_metadata", json.dumps({k: w.metadata(a.date)[k] for k in ("status", "record_count", "file_size_bytes", "d1_cleaned")})),
        ]
        for k, v in rows:
            print(f"    {k:<26} {v}")
        print(f"==> the archive was saved to {out.name}; read it with:")
        print(f"    gzip -dc {out.name} | head -3")
        print(f"    gzip -dc {out.name} | jq -r 'select(.status >= 500) | .path' | sort | uniq -c | sort -rn | head")
        print(f"    duckdb -c \"SELECT status, count(*) FROM read_json('{out.name}') GROUP BY 1 ORDER BY 2 DESC\"")
        print(f"    curl -H 'Authorization: Bearer {token}' 'http://127.0.0.1:{w.port}/admin/archive-status?date={a.date}'   (with --keep)")
        if a.keep:
            print(f"==> Worker left running; console http://127.0.0.1:{w.port}/admin/ (token {token}); Ctrl-C to stop")
            while True:
                time.sleep(3600)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        w.stop()


if __name__ == "__main__":
    sys.exit(main())
