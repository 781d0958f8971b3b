#!/usr/bin/env python3
"""Drive SIPp through DCE at increasing call rates and print, for each rate, the calls placed,
the calls that failed, and the delay DCE adds between the carrier's INVITE arriving and the
buyer's INVITE leaving (p50/p99, measured inside DCE from socket read to socket write).
Stops at the first rate with a failed call and prints the highest rate with none.

Loopback only; every step is bounded in calls and time.

    cargo build --release && python3 scripts/load.py [--rates 100,200,500] [--seconds 10]
        [--buyer-transport tcp]   # the buyer over TCP (DCE's own connection; prints how many)
        [--rtb 10]                # 10 real-time bidders answering in 5-20 ms (examples/bidder.rs;
                                  # build it: cargo build --release --example bidder)
        [--duplicates not_billable]  # the campaign has a duplicate rule (after "routed", 30 days);
                                  # SIPp's one caller makes every call after the first a duplicate
        [--redis]                 # [storage] redis_url = the local Redis (fleet-wide checks on)
        [--fleet-caps]            # --redis, and the buyer has caps: each call takes a fleet-wide
                                  # lease in Redis before its INVITE (caps far above the load)
        [--stir]                  # every call carries an Identity signed for it (iat = now) by a
                                  # test STI PKI; DCE verifies it ([stir], the campaign requires
                                  # A) against the chain an HTTPS server on loopback serves
                                  # (needs python3-cryptography)

With --watchers N the HTTP API is on, N WebSocket clients follow /v1/events (as live pages
would) and a scraper reads /metrics and /v1/calls once a second: the delay then includes what
events, metrics and the API cost the call path.
"""
import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

# SHA-256 of "load-secret".
LOAD_SHA = "8437689df75dcde060e825e21c816fc47e00cfc488f908040f82c1e85a73c827"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# DCE_BIN: another build to measure (an A/B against an older commit).
DCE = os.environ.get("DCE_BIN") or os.path.join(ROOT, "target", "release", "dce")
SCEN = os.path.join(ROOT, "tests", "sipp")
BIDDER = os.path.join(ROOT, "target", "release", "examples", "bidder")


def free_port():
    while True:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        port = u.getsockname()[1]
        u.close()
        try:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            t.bind(("127.0.0.1", port))
            t.close()
            return port
        except OSError:
            continue


def watch(http, stop, got):
    """A WebSocket client on /v1/events that reads everything (bytes counted in got[0])."""
    s = socket.create_connection(("127.0.0.1", http), timeout=5)
    s.sendall((f"GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer load-secret\r\n\r\n").encode())
    s.settimeout(0.5)
    while not stop.is_set():
        try:
            b = s.recv(65536)
        except socket.timeout:
            continue
        if not b:
            break
        got[0] += len(b)
    s.close()


def scrape(http, stop):
    while not stop.is_set():
        for path in ("/metrics", "/v1/calls"):
            try:
                c = socket.create_connection(("127.0.0.1", http), timeout=5)
                c.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer load-secret\r\nConnection: close\r\n\r\n".encode())
                while c.recv(65536):
                    pass
                c.close()
            except OSError:
                pass
        stop.wait(1.0)


class Stir:
    """A test STI PKI (root, intermediate, SHAKEN signer with TNAuthList; P-256), an HTTPS
    server on 127.0.0.1 serving the signer's chain (its own CA for x5u_ca_file), and
    PASSporTs signed by the signer."""

    def __init__(self, tmp):
        import datetime
        import http.server
        import ssl
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID, ExtendedKeyUsageOID
        import ipaddress
        self.ec, self.hashes = ec, hashes
        now = datetime.datetime.now(datetime.timezone.utc)

        def name(cn):
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def cert(subject, key, issuer, issuer_key, ca, exts=()):
            b = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
                 .public_key(key.public_key()).serial_number(x509.random_serial_number())
                 .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365)))
            if ca:
                b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            for e in exts:
                b = b.add_extension(e, critical=False)
            return b.sign(issuer_key, hashes.SHA256())

        pem = lambda c: c.public_bytes(serialization.Encoding.PEM)
        key = lambda: ec.generate_private_key(ec.SECP256R1())
        root_k, int_k, self.leaf_k = key(), key(), key()
        root = cert("Load STI-PA Root", root_k, "Load STI-PA Root", root_k, True)
        inter = cert("Load STI-CA", int_k, "Load STI-PA Root", root_k, True)
        tn_auth = x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.5.5.7.1.26"),
                                             bytes([0x30, 0x08, 0xa0, 0x06, 0x16, 0x04]) + b"1234")
        leaf = cert("SHAKEN 1234", self.leaf_k, "Load STI-CA", int_k, False, [tn_auth])
        self.root = os.path.join(tmp, "sti-root.pem")
        with open(self.root, "wb") as f:
            f.write(pem(root))
        chain = pem(leaf) + pem(inter)
        # the certificate server's HTTPS
        ca_k, srv_k = key(), key()
        ca = cert("Load HTTPS CA", ca_k, "Load HTTPS CA", ca_k, True)
        srv = cert("127.0.0.1", srv_k, "Load HTTPS CA", ca_k, False, [
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
        self.https_ca = os.path.join(tmp, "https-ca.pem")
        with open(self.https_ca, "wb") as f:
            f.write(pem(ca))
        crt, k = os.path.join(tmp, "srv.pem"), os.path.join(tmp, "srv.key")
        with open(crt, "wb") as f:
            f.write(pem(srv))
        with open(k, "wb") as f:
            f.write(srv_k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        self.fetches = [0]
        fetches = self.fetches

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                fetches[0] += 1
                ok = self.path == "/sp.pem"
                body = chain if ok else b"not found\n"
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/pem-certificate-chain")
                self.send_header("Cache-Control", "max-age=3600")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(crt, k)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.x5u = f"https://127.0.0.1:{self.server.server_address[1]}/sp.pem"

    def config(self):
        return (f'[stir]\nca_file = "{self.root}"\nx5u_allow = ["127.0.0.1"]\n'
                f'x5u_ca_file = "{self.https_ca}"\n')

    def csv(self, path, calls):
        """SIPp's -inf for tests/sipp/uac_identity.xml: one PASSporT a call, signed now."""
        import base64
        import uuid
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
        b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
        header = b64(json.dumps({"alg": "ES256", "ppt": "shaken", "typ": "passport", "x5u": self.x5u},
                                separators=(",", ":")).encode())
        iat = int(time.time())
        with open(path, "w") as f:
            f.write("SEQUENTIAL\n")
            for _ in range(calls):
                claims = b64(json.dumps({"attest": "A", "dest": {"tn": ["18005550100"]}, "iat": iat,
                                         "orig": {"tn": "13105551234"}, "origid": str(uuid.uuid4())},
                                        separators=(",", ":")).encode())
                signed = f"{header}.{claims}"
                r, s = decode_dss_signature(self.leaf_k.sign(signed.encode(), self.ec.ECDSA(self.hashes.SHA256())))
                f.write(f"{signed}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))};{self.x5u};\n")

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def step(rate, seconds, hold_ms, storage=None, watchers=0, buyer_transport="udp", rtb=0, rtb_ms=(5, 20), rtb_cap=0, duplicates=None, redis=False, caps=False, stir=False):
    tmp = tempfile.mkdtemp(prefix="dce-load-")
    stir = Stir(tmp) if stir else None
    prefix = f"dce-load-{os.getpid()}-{rate}"
    if redis or caps:
        storage = f'database_url = "sqlite://{tmp}/dce.db"\nredis_url = "redis://127.0.0.1:6379/"\nredis_key_prefix = "{prefix}"'
    buyer_caps = "max_concurrent = 100000\ndaily_cap = 100000000\ndaily_budget_cents = 1000000000000" if caps else ""
    port, buyer_port, http, bid_port = free_port(), free_port(), free_port(), free_port()
    bidders = "".join(f"""[[buyer]]
id = "rtb{i}"
campaigns = ["auto"]
uri = "sip:{{called}}@127.0.0.1:{buyer_port}"
rtb = {{ url = "http://127.0.0.1:{bid_port}/b{20 + i}", timeout_ms = 100, max_in_flight = {rtb_cap} }}
""" for i in range(rtb))
    bidder = None
    if rtb:
        bidder = subprocess.Popen([BIDDER, str(bid_port), str(rtb_ms[0]), str(rtb_ms[1])], stdout=subprocess.PIPE, text=True)
    api = f"""[http]
listen = "127.0.0.1:{http}"
rate_limit_per_s = 1000
api_keys = [{{ name = "load", sha256 = "{LOAD_SHA}", role = "read" }}]
""" if watchers else ""
    cfg = os.path.join(tmp, "dce.toml")
    with open(cfg, "w") as f:
        f.write(f"""[node]
id = "load"
[sip]
listen = ["udp://127.0.0.1:{port}"{f', "tcp://127.0.0.1:{port}"' if buyer_transport == "tcp" else ""}]
advertised_host = "127.0.0.1"
max_calls = 100000
{"max_udp_request_bytes = 8000" if stir else ""}
[cdr]
jsonl_path = "{tmp}/cdr.jsonl"
[storage]
{storage or f'database_url = "sqlite://{tmp}/dce.db"'}
spool_dir = "{tmp}/spool"
[[carrier]]
id = "load"
sources = ["127.0.0.1/32"]
[[campaign]]
id = "auto"
numbers = ["+18005550100"]
tcpa_hours = false
{f'duplicates = {{ window_days = 30, after = "routed", action = "{duplicates}" }}' if duplicates else ""}
{'stir = { require = "A" }' if stir else ""}
[[buyer]]
id = "acme"
campaigns = ["auto"]
uri = "sip:{{called}}@127.0.0.1:{buyer_port}{';transport=tcp' if buyer_transport == 'tcp' else ''}"
bid_cents = 1500
{buyer_caps}
{bidders}{api}{stir.config() if stir else ""}""")
    env = dict(os.environ, RUST_LOG="warn")
    dce = subprocess.Popen([DCE, "run", "--config", cfg], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True)
    time.sleep(0.5)
    stop, got, threads = threading.Event(), [0], []
    for _ in range(watchers):
        threads.append(threading.Thread(target=watch, args=(http, stop, got), daemon=True))
    if watchers:
        threads.append(threading.Thread(target=scrape, args=(http, stop), daemon=True))
    for t in threads:
        t.start()
    calls = rate * seconds
    limit = str(max(10, int(rate * (hold_ms / 1000.0 + 1) * 3)))
    common = ["-i", "127.0.0.1", "-t", "u1", "-nostdin", "-timeout", f"{seconds + 30}s", "-timeout_error", "-max_retrans", "5"]
    buyer_common = [("t1" if (x == "u1" and buyer_transport == "tcp") else x) for x in common]
    buyer = subprocess.Popen(
        ["sipp", "-sf", os.path.join(SCEN, "uas_answer.xml"), "-p", str(buyer_port), "-mp", str(free_port()), "-m", str(calls)]
        + (["-max_socket", "2000"] if buyer_transport == "tcp" else []) + buyer_common,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stat = os.path.join(tmp, "carrier_stats.csv")
    inf = []
    if stir:
        inf = ["-inf", os.path.join(tmp, "identities.csv")]
        t0 = time.time()
        stir.csv(inf[1], calls)
        print(f"  ({calls} PASSporTs signed in {time.time() - t0:.1f} s)", flush=True)
    carrier = subprocess.run(
        ["sipp", "-sf", os.path.join(SCEN, "uac_identity.xml" if stir else "uac_call.xml")] + inf + ["-s", "+18005550100", "-p", str(free_port()), "-mp", str(free_port()),
         "-r", str(rate), "-m", str(calls), "-l", limit, "-d", str(hold_ms), "-trace_stat", "-stf", stat, "-fd", "1"] + common
        + [f"127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=seconds + 60)
    try:
        buyer.wait(timeout=15)
    except subprocess.TimeoutExpired:
        buyer.kill()
    stop.set()
    for t in threads:
        t.join(timeout=5)
    if watchers:
        print(f"  ({watchers} event clients received {got[0] // watchers} bytes each)", flush=True)
    dce.send_signal(signal.SIGTERM)
    _, err = dce.communicate(timeout=20)
    if bidder:
        bidder.send_signal(signal.SIGTERM)
        out, _ = bidder.communicate(timeout=10)
        print(f"  ({out.strip()}; {rtb} bidders per call)", flush=True)
        try:
            with open(os.path.join(tmp, "cdr.jsonl")) as f:
                kinds, slowest = {}, []
                for line in f:
                    pings = json.loads(line).get("pings", [])
                    for p in pings:
                        k = p["outcome"].split(":")[0]
                        kinds[k] = kinds.get(k, 0) + 1
                    if pings:
                        slowest.append(max(p["latency_ms"] for p in pings))
            slowest.sort()
            q = lambda f: slowest[min(len(slowest) - 1, int(f * len(slowest)))] if slowest else None
            print(f"  (pings in CDRs by outcome: {kinds}; each call's slowest bid as DCE's client timed it, "
                  f"p50 {q(0.5)} ms, p99 {q(0.99)} ms)", flush=True)
        except OSError:
            pass
    if stir:
        verdicts = {}
        try:
            with open(os.path.join(tmp, "cdr.jsonl")) as f:
                for line in f:
                    v = json.loads(line).get("stir")
                    verdicts[v] = verdicts.get(v, 0) + 1
        except OSError:
            pass
        print(f"  (STIR verdicts in CDRs: {verdicts}; certificate fetches: {stir.fetches[0]})", flush=True)
        stir_ok = verdicts.get("A", 0)
        stir.stop()
    if redis or caps:
        keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}:*"], capture_output=True, text=True).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "DEL"] + keys[i:i + 500], capture_output=True)
        lease_errors = re.search(r"cap_lookup_errors=(\d+)", err)
        shared_errors = re.search(r"compliance_lookup_errors=(\d+)", err)
        print(f"  (fleet-wide compliance lookups that failed or missed the deadline: {shared_errors.group(1) if shared_errors else 0})", flush=True)
        if caps:
            print(f"  (fleet-wide cap lookups that failed: {lease_errors.group(1) if lease_errors else 0})", flush=True)
    failed = None
    try:
        with open(stat) as f:
            rows = [l.strip().split(";") for l in f if l.strip()]
        head, last = rows[0], rows[-1]
        failed = int(last[head.index("FailedCall(C)")])
        ok = int(last[head.index("SuccessfulCall(C)")])
    except Exception:
        ok = None
    if stir and failed is not None and ok is not None:
        # uac_identity.xml takes STIR's refusals as the end of a call: count them as failed
        unverified = calls - stir_ok
        failed, ok = failed + unverified, ok - unverified
    m = re.search(r"invite_delay n=(\d+) p50=(\d+)us p99=(\d+)us max=(\d+)us", err)
    delay = (int(m.group(2)), int(m.group(3)), int(m.group(4))) if m else (None, None, None)
    b = re.search(r"dce: over_bidders (.*)", err)
    if b:
        print(f"  (real-time bids: over the slowest bidder, asked → request started, answer read → taken: {b.group(1)})", flush=True)
    if buyer_transport == "tcp":
        c = re.search(r"tcp_buyer_connected=(\d+)", err)
        print(f"  (TCP connections DCE opened to the buyer: {c.group(1) if c else 0})", flush=True)
    return carrier.returncode, calls, ok, failed, delay


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="50,100,200,300,500,700,1000")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--hold-ms", type=int, default=1000)
    ap.add_argument("--watchers", type=int, default=0, help="WebSocket event clients (and a scraper)")
    ap.add_argument("--buyer-transport", choices=["udp", "tcp"], default="udp", help="how DCE reaches the buyer")
    ap.add_argument("--rtb", type=int, default=0, help="real-time bidders per call (examples/bidder.rs)")
    ap.add_argument("--rtb-max-in-flight", type=int, default=0, help="each bidder's max_in_flight (0 = unlimited)")
    ap.add_argument("--duplicates", choices=["same_buyer", "not_billable"], help="a campaign duplicate rule (calls keep flowing)")
    ap.add_argument("--redis", action="store_true", help="redis_url set: the fleet-wide checks on every call")
    ap.add_argument("--fleet-caps", action="store_true", help="--redis, and the buyer is capped: a fleet-wide lease per call")
    ap.add_argument("--stir", action="store_true", help="every call signed (Identity), verified by DCE ([stir])")
    a = ap.parse_args()
    if a.rtb and not os.path.exists(BIDDER):
        sys.exit("build the bidder first: cargo build --release --example bidder")
    if not os.path.exists(DCE):
        sys.exit("build first: cargo build --release")
    print(f"{'calls/s':>8} {'placed':>7} {'ok':>7} {'failed':>7} {'p50 us':>7} {'p99 us':>7} {'max us':>7}")
    best = None
    for rate in [int(r) for r in a.rates.split(",")]:
        rc, calls, ok, failed, (p50, p99, mx) = step(rate, a.seconds, a.hold_ms, watchers=a.watchers, buyer_transport=a.buyer_transport, rtb=a.rtb, rtb_cap=a.rtb_max_in_flight, duplicates=a.duplicates, redis=a.redis, caps=a.fleet_caps, stir=a.stir)
        print(f"{rate:>8} {calls:>7} {ok if ok is not None else '?':>7} {failed if failed is not None else '?':>7} "
              f"{p50 if p50 is not None else '?':>7} {p99 if p99 is not None else '?':>7} {mx if mx is not None else '?':>7}", flush=True)
        if rc != 0 or not failed == 0 or ok != calls:
            break
        best = rate
    print(f"highest rate with zero failed calls: {best if best else 'none'} calls/s")


if __name__ == "__main__":
    main()
