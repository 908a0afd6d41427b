"""scripts/soak's body. By default: 1M-row days, killed with SIGKILL again and again until the
kill count is reached, each day checked row by row against what D1 held before its run. With
--writer or --restore: the soaks of scripts/soak_modes.py."""

import argparse
import datetime as dt
import random
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from crashloop import run_with_kills  # noqa: E402
from localworker import ROOT, LocalWorker  # noqa: E402
import soak_modes  # noqa: E402


def single_day(a, rng) -> int:
    """One day under --writer or --restore; prints the table for docs/reliability.md."""
    mode = "writer" if a.writer else "restore"
    workdir = ROOT / ".wrangler" / f"soak-{mode}"
    shutil.rmtree(workdir, ignore_errors=True)
    # Restores go in steps of 20,000 rows here (200,000 by default), so a 1M-row restore lasts
    # long enough for ten kills and more.
    extra = {"CLEAN_STEP_ROWS": "20000"} if a.restore else {}
    w = LocalWorker(workdir, token="soak-token", vars={"TEST_HOOKS": "1", "MAX_RUNNING_DATES": "1", **extra})
    w.migrate()
    date = (dt.datetime.now(dt.timezone.utc).date() - dt.timedelta(days=20)).isoformat()
    w.seed(date, a.rows)
    started = time.time()
    try:
        if a.writer:
            v = soak_modes.writer_soak(w, date, a.kills, rng)
            ok = v.lost == 0 and v.deleted_unarchived == 0 and len(v.kills) >= min(a.kills, 10)
            table = soak_modes.report_writer(v, a.rows, time.time() - started)
        else:
            r = soak_modes.restore_soak(w, date, a.kills, rng)
            ok = (r["missing"], r["inserted_twice"], r["altered"], r["conflicts"]) == (0, 0, 0, 0) \
                and len(r["kills"]) >= min(a.kills, 10)
            table = soak_modes.report_restore(r)
    finally:
        w.stop()
    flags = " --writer" if a.writer else " --restore"
    print(f"\nscripts/soak{flags} --rows {a.rows} --kills {a.kills} --seed {a.seed}: {time.time() - started:.0f} s")
    print(table)
    return 0 if ok else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--writer", action="store_true", help="one day archived while an app writer inserts, updates and deletes")
    p.add_argument("--restore", action="store_true", help="one day restored while workerd is killed")
    a = p.parse_args()
    rng = random.Random(a.seed)
    if a.writer or a.restore:
        return single_day(a, rng)
    workdir = ROOT / ".wrangler" / "soak"
    shutil.rmtree(workdir, ignore_errors=True)
    w = LocalWorker(workdir, token="soak-token", vars={"MAX_RUNNING_DATES": "1", "TEST_HOOKS": "1", "PARQUET": "true"})
    w.migrate()
    today = dt.datetime.now(dt.timezone.utc).date()
    others = [(today - dt.timedelta(days=d)).isoformat() for d in (1, 2)]
    for o in others:
        w.seed(o, 10_000)
    before_others = {o: w.rows(o) for o in others}
    started = time.time()
    kills, days, totals = [], [], dict(lost=0, duplicated=0, altered=0, left_in_d1=0, cron_rescues=0,
                                    parquet_mismatched=0, parquet_duplicated=0, parquet_unlisted=0)
    offset = 20
    try:
        while len(kills) < a.kills:
            date = (today - dt.timedelta(days=offset)).isoformat()
            offset += 1
            w.seed(date, a.rows)
            # The export is the longest phase: aim three kills at it for each at the others.
            out = run_with_kills(w, date, kills=min(12, a.kills - len(kills)), rng=rng, first=len(kills) + 1,
                                 targets=["exporting", "exporting", "exporting", "verifying", "cleaning", "cleaning"])
            w.stop()
            kills += out.kills
            days.append((date, len(out.kills), out))
            for k in totals:
                totals[k] += getattr(out, k)
            print(f"{date}: {len(out.kills)} kills, lost {out.lost}, duplicated {out.duplicated}, altered {out.altered}, left in D1 {out.left_in_d1}", flush=True)
        w.start()
        untouched = all(w.rows(o) == before_others[o] for o in others)
    finally:
        w.stop()
    by_phase = {}
    for k in kills:
        by_phase[k.phase] = by_phase.get(k.phase, 0) + 1
    print()
    print(f"scripts/soak --rows {a.rows} --kills {a.kills} --seed {a.seed}: {time.time() - started:.0f} s")
    print("| days | rows per day | kills survived | kills by phase seen | cron rescues | rows lost | rows duplicated | rows altered | rows left in D1 | Parquet rows wrong / twice, unlisted files | other dates untouched |")
    print("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|:--:|")
    print(f"| {len(days)} | {a.rows:,} | {len(kills)} | {', '.join(f'{p}: {n}' for p, n in sorted(by_phase.items()))} | {totals['cron_rescues']} | "
          f"{totals['lost']} | {totals['duplicated']} | {totals['altered']} | {totals['left_in_d1']} | "
          f"{totals['parquet_mismatched']} / {totals['parquet_duplicated']}, {totals['parquet_unlisted']} | {'yes' if untouched else 'NO'} |")
    print()
    for k in kills:
        print(f"kill {k.number:>2}: aimed at {k.target:<10} phase {k.phase:<10} rows exported {k.rows_exported:>9,}  deleted {k.rows_deleted:>9,}")
    ok = untouched and all(v == 0 for k, v in totals.items() if k != "cron_rescues")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
