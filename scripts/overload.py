#!/usr/bin/env python3
"""Offer DCE more calls than it can take and print what it did with them and its memory:
VmRSS before, at its peak during the load, and after the load has ended and every call's
transactions have expired (Timer J is 64 x T1 = 32 s; calls whose BYE was lost end by RTP
timeout, 30 s); calls completed, shed with a stateless
503 at the receive side, refused 503 by the controller; SIPp's successful and failed calls
(a call that is answered or refused with 503 succeeds; anything else fails).

Loopback only; bounded in calls and time.

    cargo build --release && python3 scripts/overload.py [--rate 5500] [--seconds 20] [--settle 75]
"""
import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from load import DCE, SCEN, free_port  # noqa: E402


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=int, default=5500)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--settle", type=int, default=75, help="seconds to wait after the load")
    a = ap.parse_args()
    if not os.path.exists(DCE):
        sys.exit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="dce-overload-")
    port, buyer_port = free_port(), free_port()
    cfg = os.path.join(tmp, "dce.toml")
    with open(cfg, "w") as f:
        f.write(f"""[node]
id = "overload"
[sip]
listen = ["udp://127.0.0.1:{port}"]
advertised_host = "127.0.0.1"
max_calls = 100000
[media]
port_min = 20000
port_max = 59999
[compliance]
calling_hours = {{ start = "00:00", end = "24:00" }}
[cdr]
jsonl_path = "{tmp}/cdr.jsonl"
[storage]
database_url = "sqlite://{tmp}/dce.db"
spool_dir = "{tmp}/spool"
[[carrier]]
id = "load"
sources = ["127.0.0.1/32"]
[[campaign]]
id = "auto"
numbers = ["+18005550100"]
[[buyer]]
id = "acme"
campaigns = ["auto"]
uri = "sip:{{called}}@127.0.0.1:{buyer_port}"
bid_cents = 1500
""")
    env = dict(os.environ, RUST_LOG="warn")
    dce = subprocess.Popen([DCE, "run", "--config", cfg], stderr=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, env=env, text=True)
    time.sleep(1.0)
    before = rss_kib(dce.pid)
    peak, stop = [before], threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(dce.pid))
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    calls = a.rate * a.seconds
    common = ["-i", "127.0.0.1", "-t", "u1", "-nostdin", "-timeout", f"{a.seconds + 60}s",
              "-timeout_error", "-max_retrans", "5"]
    buyer = subprocess.Popen(
        ["sipp", "-sf", os.path.join(SCEN, "uas_answer.xml"), "-p", str(buyer_port),
         "-mp", str(free_port())] + common, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stat = os.path.join(tmp, "carrier_stats.csv")
    carrier = subprocess.run(
        ["sipp", "-sf", os.path.join(SCEN, "uac_call_or_503.xml"), "-s", "+18005550100",
         "-p", str(free_port()), "-mp", str(free_port()), "-r", str(a.rate), "-m", str(calls),
         "-l", str(a.rate * 5), "-d", str(a.hold_ms), "-trace_stat", "-stf", stat, "-fd", "1"]
        + common + [f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=a.seconds + 120)
    during = peak[0]
    buyer.send_signal(signal.SIGTERM)
    try:
        buyer.wait(timeout=10)
    except subprocess.TimeoutExpired:
        buyer.kill()
    time.sleep(a.settle)
    after = rss_kib(dce.pid)
    stop.set()
    dce.send_signal(signal.SIGTERM)
    _, err = dce.communicate(timeout=30)
    ok = failed = None
    try:
        with open(stat) as f:
            rows = [l.strip().split(";") for l in f if l.strip()]
        head, last = rows[0], rows[-1]
        failed = int(last[head.index("FailedCall(C)")])
        ok = int(last[head.index("SuccessfulCall(C)")])
    except Exception:
        pass

    def counter(name):
        m = re.search(rf"\b{name}=(\d+)", err)
        return int(m.group(1)) if m else 0

    print(f"offered {calls} calls at {a.rate}/s for {a.seconds} s (held {a.hold_ms} ms); SIPp exit {carrier.returncode}")
    print(f"SIPp: {ok} successful (answered or 503), {failed} failed")
    print(f"DCE: {counter('calls_completed')} completed, {counter('rejected_503_shed')} shed 503 at the receive side, "
          f"{counter('rejected_503_overload')} 503 by the controller, {counter('dropped_queue_full')} dropped with the queue full")
    print(f"DCE counters: {(re.findall(r'counters (.*)', err) or [''])[-1]}")
    print(f"VmRSS: before {before // 1024} MiB, peak during {during // 1024} MiB, {a.settle} s after {after // 1024} MiB")


if __name__ == "__main__":
    main()
