#!/usr/bin/env python3
"""Call-setup delay with the CDR database up, slow and down: the call path must not wait for it.

Runs the same SIPp load (scripts/load.py's step) through DCE three times against a PostgreSQL
database created for the run on 127.0.0.1:5432 (dropped after):
  up    the database as is;
  slow  a trigger sleeps 2 s in every INSERT statement on `calls` (each batch takes 2 s+);
  down  database_url points at a port nothing listens on (CDRs go to the spool).
Prints, per mode, calls placed / ok / failed and the INVITE-in to buyer-INVITE-out delay DCE
measured (p50/p99/max). Loopback only; bounded in calls and time.

    cargo build --release && python3 scripts/db_delay.py [--rate 200] [--seconds 10]
"""
import argparse
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import load  # noqa: E402

PG = "postgres://postgres@127.0.0.1:5432"


def psql(db, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", f"{PG}/{db}", "-c", sql], check=True,
                   stdout=subprocess.DEVNULL)


def count(db):
    out = subprocess.run(["psql", "-tA", f"{PG}/{db}", "-c", "SELECT count(*) FROM calls"],
                         capture_output=True, text=True)
    return int(out.stdout.strip()) if out.returncode == 0 else 0  # no table before the first run


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--hold-ms", type=int, default=1000)
    a = ap.parse_args()
    if not os.path.exists(load.DCE):
        sys.exit("build first: cargo build --release")
    db = f"dce_delay_{os.getpid()}"
    psql("test", f"CREATE DATABASE {db}")
    try:
        print(f"{'database':>9} {'placed':>7} {'ok':>7} {'failed':>7} {'p50 us':>7} {'p99 us':>7} {'max us':>7} {'rows':>7}")
        modes = [
            ("up", f'database_url = "{PG}/{db}"'),
            ("slow", f'database_url = "{PG}/{db}"'),
            ("down", 'database_url = "postgres://postgres@127.0.0.1:9/none"'),
        ]
        for name, storage in modes:
            if name == "slow":
                psql(db, "CREATE FUNCTION dce_slow() RETURNS trigger LANGUAGE plpgsql AS "
                         "$$ BEGIN PERFORM pg_sleep(2); RETURN NULL; END $$;"
                         "CREATE TRIGGER dce_slow BEFORE INSERT ON calls FOR EACH STATEMENT EXECUTE FUNCTION dce_slow()")
            before = count(db) if name != "down" else None
            rc, calls, ok, failed, (p50, p99, mx) = load.step(a.rate, a.seconds, a.hold_ms, storage)
            rows = count(db) - before if before is not None else "-"
            print(f"{name:>9} {calls:>7} {ok if ok is not None else '?':>7} {failed if failed is not None else '?':>7} "
                  f"{p50 if p50 is not None else '?':>7} {p99 if p99 is not None else '?':>7} "
                  f"{mx if mx is not None else '?':>7} {rows:>7}", flush=True)
    finally:
        psql("test", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


if __name__ == "__main__":
    main()
