"""Peak wasm memory of a restore alone against a restore after an export in the same isolate.

    .venv/bin/python scripts/memprobe.py [rows]

Archives a seeded day, reads it whole through /admin/events, then restores it twice over: once
in the same workerd (as scripts/bench does), once after restarting workerd (a fresh isolate,
as a restore days later would run). Prints the Durable Object's peak wasm memory after each.
"""

import datetime as dt
import shutil
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from localworker import ROOT, LocalWorker  # noqa: E402

MIB = 1048576


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    date = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=10)).isoformat()
    for fresh in (False, True):
        workdir = ROOT / ".wrangler" / "memprobe"
        shutil.rmtree(workdir, ignore_errors=True)
        w = LocalWorker(workdir, token="memprobe")
        w.migrate()
        w.seed(date, rows)
        w.start()
        try:
            st = w.archive(date)
            archived = st["peak_wasm_memory_bytes"]
            req = urllib.request.Request(f"http://127.0.0.1:{w.port}/admin/events?date={date}",
                                         headers={"Authorization": f"Bearer {w.token}"})
            with urllib.request.urlopen(req) as r:
                r.read()
            if fresh:
                w.stop()
                w.start()
            code, body = w.api("POST", f"/admin/restore?date={date}")
            assert code == 202, body
            st = w.wait_for(date, {"restored", "failed"})
            print(f"{rows:,} rows: archived {archived / MIB:.1f} MiB; restore "
                  f"{'in a fresh isolate' if fresh else 'in the same isolate'}: {st['peak_wasm_memory_bytes'] / MIB:.1f} MiB",
                  flush=True)
        finally:
            w.stop()
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
