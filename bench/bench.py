#!/usr/bin/env python3
"""Helpers for bench/run (python3 standard library only).

Subcommands:
  gen DIR                 bodies + signatures for every scenario (manifest.json)
  render TEMPLATE OUT K=V  fill @K@ placeholders; refuse to leave one unfilled
  procstat PID...         "<cpu ticks> <peak rss KiB> <pids> <user ticks> <sys ticks>" of the
                          processes and their children
  accepts URL             connections the upstream accepted (nginx stub_status / HAProxy stats)
  check URL BODY SIG STATUS [HEADER=VALUE]
                          one POST; exit 1 unless the status (and header) match
  client URL BODY SIG N   N sequential POSTs on one keep-alive connection
  record ...              one result line (JSON) from a wrk run and /proc readings
  report RESULTS          the table, the ratios and the per-byte scaling check
  hashref                 HMAC-SHA256 MB/s of this machine (hashlib/OpenSSL), 1 MiB
  breakdown FILE          exclusive callgrind cost grouped by crate / library
  top FILE                top functions of a callgrind_annotate listing, one line each
  cgtotal FILE            PROGRAM TOTALS of a callgrind_annotate listing
  strace FILE             syscalls per request from strace -c output
  cgsplit FILE            Ir per request, of which SHA-256, of a callgrind_annotate listing
"""

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import sys
import threading
import time
import urllib.parse
import urllib.request

SIZES = {"1k": 1024, "64k": 64 * 1024, "1m": 1024 * 1024}
WRONG_SECRET = b"not-the-secret"


def github_body(size, action="opened"):
    """A GitHub pull_request-like JSON delivery of exactly `size` bytes, action first."""
    doc = {
        "action": action,
        "number": 1347,
        "pull_request": {
            "url": "https://api.github.com/repos/octocat/Hello-World/pulls/1347",
            "id": 1,
            "state": "open",
            "title": "Amazing new feature",
            "user": {"login": "octocat", "id": 1, "type": "User"},
            "body": "Please pull these awesome changes in!",
            "head": {"ref": "new-topic", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
            "base": {"ref": "master", "sha": "6dcb09b5b57875f334f61aebed695e2e4193db5e"},
        },
        "repository": {"id": 1296269, "full_name": "octocat/Hello-World", "private": False},
        "sender": {"login": "octocat", "id": 1},
        "padding": "",
    }
    base = len(json.dumps(doc, separators=(",", ":")).encode())
    if size < base:
        raise SystemExit(f"body size {size} is below the minimal document ({base} bytes)")
    filler = "abcdefghijklmnopqrstuvwxyz0123456789"
    need = size - base
    doc["padding"] = (filler * (need // len(filler) + 1))[:need]
    data = json.dumps(doc, separators=(",", ":")).encode()
    assert len(data) == size, (len(data), size)
    return data


def sign(secret, body):
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def cmd_gen(args):
    secret = os.environ["BENCH_GITHUB_SECRET"].encode()
    os.makedirs(args.dir, exist_ok=True)
    manifest = {
        "secret_b64": base64.b64encode(secret).decode(),
    }
    bodies = {name: github_body(size) for name, size in SIZES.items()}
    bodies["closed"] = github_body(1024, action="closed")
    for name, body in bodies.items():
        path = os.path.join(args.dir, f"body-{name}.json")
        with open(path, "wb") as f:
            f.write(body)
        manifest[name] = {
            "file": path,
            "size": len(body),
            "sig": sign(secret, body),
            "bad_sig": sign(WRONG_SECRET, body),
        }
    with open(os.path.join(args.dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


def cmd_get(args):
    """Print one value of the manifest: get DIR KEY [FIELD]."""
    with open(os.path.join(args.dir, "manifest.json")) as f:
        value = json.load(f)[args.key]
    if args.field:
        value = value[args.field]
    print(value)


def cmd_render(args):
    with open(args.template) as f:
        text = f.read()
    for kv in args.values:
        key, _, value = kv.partition("=")
        text = text.replace(f"@{key}@", value)
    left = sorted(set(re.findall(r"@[A-Z_0-9]+@", text)))
    if left:
        raise SystemExit(f"{args.template}: unfilled placeholders {', '.join(left)}")
    with open(args.out, "w") as f:
        f.write(text)


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
            except OSError:
                pass
    except OSError:
        pass
    return out


def proc_reading(pid):
    """(utime+stime ticks incl. all threads, VmHWM KiB, utime, stime) or None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        fields = stat.rsplit(")", 1)[1].split()
        utime, stime = int(fields[11]), int(fields[12])  # fields 14, 15 of /proc/PID/stat
        ticks = utime + stime
        hwm = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
        return ticks, hwm, utime, stime
    except (OSError, IndexError, ValueError):
        return None


def process_tree(pids):
    """The processes and all their descendants."""
    seen, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children(pid))
    return seen


def cmd_procstat(args):
    seen = process_tree(int(p) for p in args.pids)
    ticks = rss = user = system = 0
    for pid in seen:
        r = proc_reading(pid)
        if r:
            ticks += r[0]
            rss += r[1]
            user += r[2]
            system += r[3]
    print(ticks, rss, ",".join(map(str, sorted(seen))), user, system)


def cmd_accepts(args):
    """Connections accepted so far by the upstream (nginx stub_status or HAProxy stats)."""
    with urllib.request.urlopen(args.url, timeout=5) as r:
        text = r.read().decode()
    if text.startswith("Active connections"):
        # "Active connections: 1 \nserver accepts handled requests\n 5 5 9 \n..."
        print(text.splitlines()[2].split()[0])
        return
    with urllib.request.urlopen(args.url.rstrip("/") + "/;csv", timeout=5) as r:
        lines = r.read().decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    col = header.index("conn_tot") if "conn_tot" in header else header.index("stot")
    for line in lines[1:]:
        f = line.split(",")
        if f[0] == "upstream" and f[1] == "FRONTEND":
            print(f[col] or 0)
            return
    raise SystemExit("no upstream FRONTEND line in the HAProxy stats")


def upstream_requests(url):
    """HTTP requests the HAProxy upstream has answered so far (its frontend's req_tot)."""
    with urllib.request.urlopen(url.rstrip("/") + "/;csv", timeout=5) as r:
        lines = r.read().decode().splitlines()
    header = lines[0].lstrip("# ").split(",")
    col = header.index("req_tot")
    for line in lines[1:]:
        f = line.split(",")
        if f[0] == "upstream" and f[1] == "FRONTEND":
            return int(f[col] or 0)
    raise SystemExit("no upstream FRONTEND line in the HAProxy stats")


def cmd_upreqs(args):
    print(upstream_requests(args.url))


def metric_sum(text, name, **labels):
    """Sum of the samples of `name` whose labels include `labels` (Prometheus text format)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, rest = head.partition("{")
        if metric != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(value)
    return int(total)


def cmd_drain(args):
    """After a queued cell: wait until every acknowledged (202) delivery was
    delivered (hookgate_queue_attempts_total{result="delivered"}) and counted at
    the upstream; print acked, delivered, upstream requests, drain seconds, and
    the stored-but-undelivered count (0 when the check passed)."""
    start = time.monotonic()
    deadline = start + args.timeout
    while True:
        with urllib.request.urlopen(args.metrics, timeout=5) as r:
            text = r.read().decode()
        acked = metric_sum(text, "hookgate_requests_total", outcome="queued")
        delivered = metric_sum(text, "hookgate_queue_attempts_total", result="delivered")
        upstream = upstream_requests(args.upstream) - args.up_before
        if (delivered >= acked and upstream >= acked) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    took = time.monotonic() - start
    missing = max(acked - delivered, acked - upstream, 0)
    print(acked, delivered, upstream, f"{took:.2f}", missing)


def post(conn, path, body, sig, delivery=None):
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "User-Agent": "GitHub-Hookshot/bench",
    }
    if sig:
        headers["X-Hub-Signature-256"] = sig
    if delivery:
        headers["X-GitHub-Delivery"] = delivery
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    return resp, data


def cmd_check(args):
    u = urllib.parse.urlsplit(args.url)
    with open(args.body, "rb") as f:
        body = f.read()
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        resp, data = post(conn, u.path, body, args.sig)
    except OSError as e:
        raise SystemExit(f"check {args.url}: {e}")
    ok = resp.status == args.status
    if ok and args.header:
        name, _, want = args.header.partition("=")
        got = resp.getheader(name)
        ok = got == want
        if not ok:
            print(f"check {args.url}: header {name}: {got!r}, want {want!r}", file=sys.stderr)
    if not ok:
        print(f"check {args.url}: status {resp.status} (want {args.status}): {data[:200]!r}", file=sys.stderr)
        sys.exit(1)


def cmd_client(args):
    """N sequential POSTs on one keep-alive connection, or spread over --conns
    connections sent from as many threads (requests in flight at once)."""
    u = urllib.parse.urlsplit(args.url)
    with open(args.body, "rb") as f:
        body = f.read()
    conns = max(1, args.conns)
    bad = [0] * conns

    def run(k):
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
        for i in range(k, args.n, conns):
            # --unique-ids PREFIX: a fresh X-GitHub-Delivery per request (deduped routes)
            delivery = f"{args.unique_ids}-{i}" if args.unique_ids else None
            resp, _ = post(conn, u.path, body, args.sig, delivery)
            if resp.status != args.status:
                bad[k] += 1

    start = time.monotonic()
    if conns == 1:
        run(0)
    else:
        threads = [threading.Thread(target=run, args=(k,)) for k in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    took = time.monotonic() - start
    print(f"{args.n} requests on {conns} connections in {took:.1f} s, {sum(bad)} with an unexpected status",
          file=sys.stderr)
    if sum(bad):
        sys.exit(1)


def rss_tree_kib(pid):
    """Current VmRSS of a process and all its children, KiB."""
    total = 0
    for p in process_tree([pid]):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def read_one_response(sock, deadline):
    """Reads one HTTP/1.1 response with Content-Length framing; returns its status or None."""
    data = b""
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        if time.monotonic() > deadline:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            return None
        rest += chunk
    return status


def cmd_idle(args):
    """Opens N keep-alive connections, sends one signed delivery on each, leaves them
    idle, and prints the server's RSS growth per connection (a markdown table row)."""
    import resource
    import socket
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.n + 256)), hard))
    u = urllib.parse.urlsplit(args.url)
    with open(args.body, "rb") as f:
        body = f.read()
    request = (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.hostname}:{u.port}\r\n"
        "Content-Type: application/json\r\nX-GitHub-Event: pull_request\r\n"
        f"X-Hub-Signature-256: {args.sig}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    before = rss_tree_kib(args.pid)
    deadline = time.monotonic() + 120
    socks, ok = [], 0
    try:
        for _ in range(args.n):
            sock = socket.create_connection((u.hostname, u.port), timeout=30)
            sock.sendall(request)
            socks.append(sock)
        for sock in socks:
            if read_one_response(sock, deadline) == 200:
                ok += 1
        time.sleep(args.settle)
        after = rss_tree_kib(args.pid)
        # Still open: a read must time out rather than see EOF.
        open_now = 0
        for sock in socks[: min(len(socks), 50)]:
            sock.settimeout(0.01)
            try:
                open_now += 0 if sock.recv(1) == b"" else 1
            except (socket.timeout, BlockingIOError):
                open_now += 1
            except OSError:
                pass
    finally:
        for sock in socks:
            sock.close()
    per_connection = round((after - before) * 1024 / max(args.n, 1))
    print(f"| {args.system} | {args.n} | {ok} | {open_now} | {before / 1024:.1f} | "
          f"{after / 1024:.1f} | {per_connection:,} |")


def cmd_record(args):
    wrk = None
    with open(args.wrk_output) as f:
        for line in f:
            if line.startswith("WRKJSON "):
                wrk = json.loads(line[len("WRKJSON "):])
    if wrk is None:
        raise SystemExit(f"no WRKJSON line in {args.wrk_output}")
    row = {
        "system": args.system,
        "scenario": args.scenario,
        "size": args.size,
        "conns": args.conns,
        "kind": args.kind,
        "expect_status": args.expect_status,
        "cpu_ticks": args.cpu_after - args.cpu_before,
        "sys_ticks": args.sys_after - args.sys_before,
        "up_cpu_ticks": args.up_after - args.up_before,
        "aux_cpu_ticks": args.aux_after - args.aux_before,
        "clk_tck": os.sysconf("SC_CLK_TCK"),
        "rss_kib": args.rss_kib,
        "up_accepts": args.accepts_after - args.accepts_before,
        "note": args.note,
        **wrk,
    }
    if args.queue:
        acked, delivered, upstream, drain_s, missing = args.queue.split()
        row["queue"] = {"acked": int(acked), "delivered": int(delivered), "upstream": int(upstream),
                        "drain_s": float(drain_s), "missing": int(missing)}
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(summary_line(row))


def derived(row):
    secs = row["duration_us"] / 1e6
    n = max(row["requests"], 1)
    cpu_s = row["cpu_ticks"] / row["clk_tck"]
    up_s = row["up_cpu_ticks"] / row["clk_tck"]
    bad = row["connect_errors"] + row["read_errors"] + row["write_errors"] + row["timeouts"]
    if row["kind"] == "reject":
        bad += row["requests"] - row["status_errors"]  # every answer must be a 401
    else:
        bad += row["status_errors"]
    # a queued cell: every 202 must have reached the upstream by the end
    bad += row.get("queue", {}).get("missing", 0)
    return {
        "rps": row["requests"] / secs,
        "p50_ms": row["p50_us"] / 1000,
        "p99_ms": row["p99_us"] / 1000,
        "cpu_100k": cpu_s / n * 1e5,
        "cpu_us": cpu_s / n * 1e6,
        "sys_pct": row.get("sys_ticks", 0) / max(row["cpu_ticks"], 1) * 100,
        "up_cpu_100k": up_s / n * 1e5,
        "aux_cpu_us": row.get("aux_cpu_ticks", 0) / row["clk_tck"] / n * 1e6,
        "rss_mib": row["rss_kib"] / 1024,
        "mbps": row["requests"] * row["size"] / secs / 1e6,
        "up_conns": row["up_accepts"],
        "bad": bad,
    }


def summary_line(row):
    d = derived(row)
    return (f"  {row['system']:<9} {row['scenario']:<12} {d['rps']:>9.0f} req/s  "
            f"p50 {d['p50_ms']:.2f} ms  p99 {d['p99_ms']:.2f} ms  "
            f"cpu {d['cpu_100k']:.2f} s/100k  rss {d['rss_mib']:.1f} MiB"
            + (f"  ERRORS {d['bad']}" if d["bad"] else ""))


SYSTEM_ORDER = ["direct", "nginx", "haproxy", "hookgate", "queued", "queued-redis", "deduped", "cluster", "baseline"]
LABEL = {
    "direct": "upstream direct",
    "nginx": "nginx proxy_pass",
    "haproxy": "HAProxy (full job)",
    "hookgate": "hookgate*",
    "queued": "hookgate queued*",
    "deduped": "hookgate + dedupe*",
    "cluster": "hookgate + dedupe, [cluster]*",
    "queued-redis": "hookgate queued on Redis*",
    "baseline": "hookgate baseline*",
}


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def ratio(a, b):
    return None if not a or not b else a / b


# (system, peer, label) pairs whose ratio is shown round by round.
ROUND_PAIRS = (("hookgate", "haproxy", "hookgate / HAProxy"),
               ("cluster", "deduped", "cluster / local"),
               ("hookgate", "baseline", "hookgate / baseline"))


def round_ratios(groups, scenarios):
    """Ratios within each round: round k of a system against round k of its peer,
    which ran minutes apart in the same invocation. The median-req/s rows above
    pair rounds that may be far apart; this shows how far each ratio moves."""
    out = ["", "Ratios round by round (req/s ratio / CPU-per-request ratio / the upstream's CPU-per-request "
           "ratio; median of the rounds last). The upstream does the same work per request behind every "
           "system, so its ratio is the control: above 1, the same work cost more per request in that "
           "system's round (fewer requests per wake-up at a lower rate, other processes on its CPU), "
           "and the last column divides that out:", "",
           "| scenario | pair | rounds | median req/s | median CPU/req | median upstream CPU/req | median CPU/req ÷ upstream's |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for sc in scenarios:
        for system, peer, label in ROUND_PAIRS:
            a, b = groups.get((sc, system)), groups.get((sc, peer))
            if not a or not b:
                continue
            pairs = [(derived(x), derived(y)) for x, y in zip(a, b)]
            rps = [ratio(x["rps"], y["rps"]) for x, y in pairs]
            cpu = [ratio(x["cpu_100k"], y["cpu_100k"]) for x, y in pairs]
            up = [ratio(x["up_cpu_100k"], y["up_cpu_100k"]) for x, y in pairs]
            own = [ratio(c, u) if c is not None else None for c, u in zip(cpu, up)]
            cells = ", ".join(f"{fmt(r)} / {fmt(c)} / {fmt(u)}" for r, c, u in zip(rps, cpu, up))
            out.append(f"| {sc} | {label} | {cells} | {fmt(median(rps))} | {fmt(median(cpu))} | "
                       f"{fmt(median(up))} | {fmt(median(own))} |")
    return out


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def cmd_report(args):
    rows = []
    with open(args.results) as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
    # several rounds: keep each cell's round with the median req/s
    groups = {}
    for r in rows:
        groups.setdefault((r["scenario"], r["system"]), []).append(r)
    cells = {}
    for key, rs in groups.items():
        rs = sorted(rs, key=lambda r: r["requests"] / r["duration_us"])
        cells[key] = rs[(len(rs) - 1) // 2]
    rounds = max(len(rs) for rs in groups.values()) if groups else 0
    rows = [cells[k] for k in groups]  # one per cell, in first-seen order
    scenarios = []
    for r in rows:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])

    out = []
    if rounds > 1:
        out.append(f"{rounds} rounds; each cell shows its median-req/s round.")
        out.append("")
    out.append("| scenario | system | req/s | p50 ms | p99 ms | CPU s/100k req | of it kernel | upstream CPU s/100k | peak RSS MiB | upstream conns opened | body MB/s | check |")
    out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for sc in scenarios:
        for sysname in SYSTEM_ORDER:
            r = cells.get((sc, sysname))
            if not r:
                continue
            d = derived(r)
            check = "ok" if not d["bad"] else f"{d['bad']} bad"
            up_cpu = "-" if sysname == "direct" else f"{d['up_cpu_100k']:.2f}"
            out.append(
                f"| {sc} | {LABEL[sysname]} | {d['rps']:.0f} | {d['p50_ms']:.2f} | {d['p99_ms']:.2f} | "
                f"{d['cpu_100k']:.2f} | {d['sys_pct']:.0f}% | {up_cpu} | {d['rss_mib']:.1f} | {d['up_conns']} | "
                f"{d['mbps']:.0f} | {check} |")
    out.append("")
    out.append("\\* hookgate and HAProxy do the same job: signature, allowlist, rate limit, routing "
               "on the body's `$.action`, and the same seven forwarded fields (`X-Forwarded-*`, "
               "`X-Request-Id`, `X-Hookgate-Route`, `X-Hookgate-Event`). nginx and the direct upstream "
               "do no verification at all.")
    out.append("")
    out.append("Ratios hookgate / peer (req/s: below 1 = hookgate slower; CPU and RSS: above 1 = hookgate costs more):")
    out.append("")
    out.append("| scenario | req/s vs HAProxy | CPU/req vs HAProxy | p99 vs HAProxy | RSS vs HAProxy | req/s vs nginx | CPU/req vs nginx | p99 vs nginx |")
    out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for sc in scenarios:
        h = cells.get((sc, "hookgate"))
        if not h:
            continue
        dh = derived(h)
        vals = []
        for peer, keys in (("haproxy", ("rps", "cpu_100k", "p99_ms", "rss_mib")),
                           ("nginx", ("rps", "cpu_100k", "p99_ms"))):
            p = cells.get((sc, peer))
            dp = derived(p) if p else {}
            vals.extend(ratio(dh[k], dp.get(k)) for k in keys)
        out.append(f"| {sc} | " + " | ".join(fmt(v) for v in vals) + " |")

    for qsys in ("queued", "queued-redis"):
        if not any(k[1] == qsys for k in cells):
            continue
        out.append("")
        store = ("in Redis (the answer of its script; appendfsync always; Redis's own CPU is not in "
                 "hookgate's CPU and is logged per cell)" if qsys == "queued-redis" else "with fsync")
        out.append(f"Queued delivery (`delivery = \"queued\"`, {LABEL[qsys]}): req/s and p50/p99 are the sender's 202 "
                   f"(stored {store}); drain = seconds from the end of the wrk run until every 202 "
                   "was delivered (hookgate's delivered attempts and the upstream's request count both "
                   "reach the 202 count, warm-up and preflight included):")
        out.append("")
        out.append("| scenario | queued req/s | ack p50 ms | ack p99 ms | vs hookgate direct mode | vs HAProxy | vs upstream direct | 202s | delivered | upstream got | drain s | check |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for sc in scenarios:
            q = cells.get((sc, qsys))
            if not q:
                continue
            dq = derived(q)
            vs = []
            for peer in ("hookgate", "haproxy", "direct"):
                p = cells.get((sc, peer))
                vs.append(ratio(dq["rps"], derived(p)["rps"]) if p else None)
            qs = q.get("queue", {})
            check = "ok" if not dq["bad"] else f"{dq['bad']} bad"
            out.append(f"| {sc} | {dq['rps']:.0f} | {dq['p50_ms']:.2f} | {dq['p99_ms']:.2f} | "
                       + " | ".join(fmt(v) for v in vs)
                       + f" | {qs.get('acked', '-')} | {qs.get('delivered', '-')} | {qs.get('upstream', '-')} | "
                       f"{qs.get('drain_s', '-')} | {check} |")

    if any(k[1] == "cluster" for k in cells):
        out.append("")
        out.append("Several instances (`[cluster]`): the same rate-limited, deduped, signed route with "
                   "its limiter and dedupe state in Redis (cluster) or in the process (deduped). "
                   "Redis CPU is the redis-server's own, per request; goal: hookgate CPU/req at most "
                   "1.15x the local state's:")
        out.append("")
        out.append("| scenario | local req/s | cluster req/s | req/s ratio | local CPU µs/req | cluster CPU µs/req | CPU/req ratio | + Redis CPU µs/req | (hookgate + Redis) / local | p99 ms local / cluster | check |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for sc in scenarios:
            l, c = cells.get((sc, "deduped")), cells.get((sc, "cluster"))
            if not l or not c:
                continue
            dl, dc = derived(l), derived(c)
            bad = dl["bad"] + dc["bad"]
            out.append(f"| {sc} | {dl['rps']:.0f} | {dc['rps']:.0f} | {fmt(ratio(dc['rps'], dl['rps']))} | "
                       f"{dl['cpu_us']:.1f} | {dc['cpu_us']:.1f} | {fmt(ratio(dc['cpu_us'], dl['cpu_us']))} | "
                       f"{dc['aux_cpu_us']:.1f} | {fmt(ratio(dc['cpu_us'] + dc['aux_cpu_us'], dl['cpu_us']))} | "
                       f"{dl['p99_ms']:.2f} / {dc['p99_ms']:.2f} | " + ("ok" if not bad else f"{bad} bad") + " |")

    if any(k[1] == "baseline" for k in cells):
        out.append("")
        out.append("hookgate / hookgate baseline (BENCH_BASELINE_BIN), same invocation:")
        out.append("")
        out.append("| scenario | req/s | CPU/req | of it kernel (pp) | p99 | upstream CPU/req | RSS |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for sc in scenarios:
            h, b = cells.get((sc, "hookgate")), cells.get((sc, "baseline"))
            if not h or not b:
                continue
            dh, db = derived(h), derived(b)
            vals = [ratio(dh[k], db[k]) for k in ("rps", "cpu_100k")]
            kernel = f"{dh['sys_pct'] - db['sys_pct']:+.0f}"
            vals2 = [ratio(dh[k], db[k]) for k in ("p99_ms", "up_cpu_100k", "rss_mib")]
            out.append(f"| {sc} | " + " | ".join(fmt(v) for v in vals) + f" | {kernel} | "
                       + " | ".join(fmt(v) for v in vals2) + " |")

    if rounds > 1:
        out.extend(round_ratios(groups, scenarios))

    # Per-byte scaling: CPU per request against body size, at the lowest concurrency.
    forwards = [r for r in rows if r["kind"] == "forward"]
    if forwards:
        conns = min(r["conns"] for r in forwards)
        ref = hash_reference()
        out.append("")
        out.append(f"Per-byte cost at {conns} connections (CPU of the server process only; "
                   f"reference: HMAC-SHA256 over 1 MiB in this machine's OpenSSL via hashlib = "
                   f"{ref:.0f} MB/s, i.e. {1000 / ref:.2f} ns/byte):")
        out.append("")
        out.append("| system | CPU µs/req 1 KiB | 64 KiB | 1 MiB | marginal ns/byte 1K→64K | 64K→1M | body MB per CPU-second at 1 MiB | hash share of marginal cost |")
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for sysname in SYSTEM_ORDER:
            pts = {}
            for r in forwards:
                if r["system"] == sysname and r["conns"] == conns:
                    pts[r["size"]] = derived(r)["cpu_us"]
            if len(pts) < 3:
                continue
            s1, s2, s3 = sorted(pts)
            m1 = (pts[s2] - pts[s1]) * 1000 / (s2 - s1)
            m2 = (pts[s3] - pts[s2]) * 1000 / (s3 - s2)
            mb_per_cpu_s = s3 / pts[s3]  # bytes per µs == MB per s
            share = (1000 / ref) / m2 if sysname in ("haproxy", "hookgate") and m2 > 0 else None
            out.append(f"| {LABEL[sysname]} | {pts[s1]:.1f} | {pts[s2]:.1f} | {pts[s3]:.1f} | "
                       f"{m1:.2f} | {m2:.2f} | {mb_per_cpu_s:.0f} | "
                       + (f"{share * 100:.0f}%" if share is not None else "-") + " |")
    text = "\n".join(out)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text + "\n")


_HASH_REF = None


def hash_reference():
    """MB/s of HMAC-SHA256 over a 1 MiB buffer (hashlib uses OpenSSL)."""
    global _HASH_REF
    if _HASH_REF is None:
        data = os.urandom(1024 * 1024)
        key = b"k" * 32
        best = 0.0
        for _ in range(3):
            n, start = 0, time.perf_counter()
            while time.perf_counter() - start < 0.3:
                hmac.digest(key, data, "sha256")
                n += 1
            best = max(best, n * len(data) / (time.perf_counter() - start) / 1e6)
        _HASH_REF = best
    return _HASH_REF


def cmd_hashref(_args):
    print(f"{hash_reference():.0f}")


def parse_annotate(path):
    """(cost, function, object) rows of `callgrind_annotate --threshold=100` output."""
    line_re = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")
    rows = []
    with open(path, errors="replace") as f:
        for line in f:
            m = line_re.match(line)
            if not m or "PROGRAM TOTALS" in m.group(2):
                continue
            rest = m.group(2)
            obj = ""
            om = re.search(r"\s\[([^\]]*)\]$", rest)
            if om:
                obj = os.path.basename(om.group(1))
                rest = rest[: om.start()]
            _, _, func = rest.partition(":")  # "file:function"; file paths carry no ':'
            rows.append((int(m.group(1).replace(",", "")), func or rest, obj))
    return rows


def owner(func, obj):
    """Which crate or library an exclusive cost belongs to."""
    f = func
    m = re.match(r"core::ptr::drop_in_place<(.*)>$", f)
    if m:
        f = m.group(1)  # dropping a T is T's crate's cost
    f = f.lstrip("<&*")
    f = re.sub(r"^(mut |dyn |const )", "", f)
    head = re.split(r"::|<|\s", f, maxsplit=1)[0]
    if obj.startswith("libc") or obj.startswith("ld-linux"):
        if re.search(r"mem(cpy|move|set|cmp)|str(len|cmp)", func):
            return "libc memcpy/memset/memcmp"
        if re.search(r"malloc|free|realloc|calloc|tcache|arena|memalign|consolidate", func):
            return "libc malloc/free"
        return "libc (syscall wrappers, pthread, misc)"
    if "vdso" in obj:
        return "vdso (clock_gettime)"
    groups = {
        "hookgate": "hookgate (our code)",
        "pingora_core": "pingora", "pingora_proxy": "pingora", "pingora_http": "pingora",
        "pingora_pool": "pingora", "pingora_error": "pingora", "pingora_timeout": "pingora",
        "pingora_load_balancing": "pingora", "pingora_runtime": "pingora", "pingora_header_serde": "pingora",
        "pingora_cache": "pingora", "pingora_limits": "pingora",
        "tokio": "tokio + mio", "mio": "tokio + mio",
        "sha2": "sha2/hmac (hashing)", "hmac": "sha2/hmac (hashing)", "digest": "sha2/hmac (hashing)",
        "block_buffer": "sha2/hmac (hashing)", "subtle": "sha2/hmac (hashing)", "hex": "sha2/hmac (hashing)",
        "tracing": "tracing", "tracing_core": "tracing", "tracing_subscriber": "tracing",
        "prometheus": "prometheus",
        "governor": "governor/quanta (rate limit)", "quanta": "governor/quanta (rate limit)",
        "httparse": "http/httparse/bytes", "http": "http/httparse/bytes", "bytes": "http/httparse/bytes",
        "uuid": "uuid/rand", "rand": "uuid/rand", "rand_core": "uuid/rand", "rand_chacha": "uuid/rand",
        "getrandom": "uuid/rand",
        "std": "Rust std/core/alloc", "core": "Rust std/core/alloc", "alloc": "Rust std/core/alloc",
        "hashbrown": "Rust std/core/alloc",
        "arc_swap": "arc_swap/dashmap", "dashmap": "arc_swap/dashmap",
        "serde": "serde/json", "serde_json": "serde/json",
        "ipnet": "hookgate deps (ipnet, smallvec, ...)", "smallvec": "hookgate deps (ipnet, smallvec, ...)",
    }
    if head in groups:
        return groups[head]
    if "hookgate" in obj:
        return f"other Rust ({head})" if head else "other Rust"
    return f"other ({obj or '?'})"


def cmd_breakdown(args):
    """Exclusive callgrind cost grouped by crate / library."""
    rows = parse_annotate(args.file)
    total = sum(c for c, _, _ in rows)
    groups = {}
    for cost, func, obj in rows:
        g = owner(func, obj)
        groups[g] = groups.get(g, 0) + cost
    n = args.requests or 1
    print(f"{'group':<40} {'Ir/request':>12} {'share':>7}")
    rest = 0
    for name, cost in sorted(groups.items(), key=lambda kv: -kv[1]):
        if cost / max(total, 1) < 0.005:
            rest += cost
            continue
        print(f"{name:<40} {cost / n:>12,.0f} {cost / max(total, 1) * 100:>6.1f}%")
    print(f"{'everything else (< 0.5% each)':<40} {rest / n:>12,.0f} {rest / max(total, 1) * 100:>6.1f}%")
    print(f"{'total':<40} {total / n:>12,.0f}")


def cmd_top(args):
    """Top functions, one line each (max cost per distinct function name)."""
    best = {}
    for cost, func, obj in parse_annotate(args.file):
        if cost > best.get(func, (0, ""))[0]:
            best[func] = (cost, obj)
    total = args.total or max((c for c, _ in best.values()), default=1)
    n = args.requests or 1
    print(f"{'Ir/request':>11} {'share':>6}  function")
    for func, (cost, _obj) in sorted(best.items(), key=lambda kv: -kv[1][0])[: args.n]:
        name = func if len(func) <= 150 else func[:147] + "..."
        print(f"{cost / n:>11,.0f} {cost / total * 100:>5.1f}%  {name}")


SHA_RE = re.compile(r"compress256|sha256_block|sha256_update|SHA256_Update|sha256_final|sha2::|KeyedMac")


def cmd_cgsplit(args):
    """One line: name, Ir per request, of which SHA-256, without SHA-256."""
    rows = parse_annotate(args.file)
    total = sum(c for c, _, _ in rows)
    # stripped libcrypto shows addresses, not names: its cost on this path is the HMAC
    sha = sum(c for c, f, o in rows if SHA_RE.search(f) or o.startswith("libcrypto"))
    n = args.requests or 1
    print(f"{args.name:<9} {total / n:>12,.0f} {sha / n:>12,.0f} {(total - sha) / n:>12,.0f}")


def cmd_strace(args):
    """Syscalls per request from `strace -c` output (timer sleeps of idle threads left out)."""
    calls = {}
    with open(args.file) as f:
        for line in f:
            p = line.split()
            if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
                calls[p[-1]] = int(p[3])
    idle = {"clock_nanosleep", "restart_syscall", "nanosleep"}
    busy = {k: v for k, v in calls.items() if k not in idle}
    n = args.requests
    top = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(busy.items(), key=lambda kv: -kv[1])
                    if v / n >= 0.05)
    print(f"{args.name:<9} syscalls per request: {sum(busy.values()) / n:.1f}  ({top})")


def cg_total(path):
    with open(path, errors="replace") as f:
        for line in f:
            if "PROGRAM TOTALS" in line:
                return int(line.split()[0].replace(",", ""))
    return 0


def cmd_cgtotal(args):
    print(cg_total(args.file))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("gen"); s.add_argument("dir"); s.set_defaults(fn=cmd_gen)
    s = sub.add_parser("get"); s.add_argument("dir"); s.add_argument("key"); s.add_argument("field", nargs="?")
    s.set_defaults(fn=cmd_get)
    s = sub.add_parser("render"); s.add_argument("template"); s.add_argument("out"); s.add_argument("values", nargs="*")
    s.set_defaults(fn=cmd_render)
    s = sub.add_parser("procstat"); s.add_argument("pids", nargs="+"); s.set_defaults(fn=cmd_procstat)
    s = sub.add_parser("accepts"); s.add_argument("url"); s.set_defaults(fn=cmd_accepts)
    s = sub.add_parser("upreqs"); s.add_argument("url"); s.set_defaults(fn=cmd_upreqs)
    s = sub.add_parser("drain"); s.add_argument("--metrics", required=True); s.add_argument("--upstream", required=True)
    s.add_argument("--up-before", type=int, required=True); s.add_argument("--timeout", type=float, default=120)
    s.set_defaults(fn=cmd_drain)
    s = sub.add_parser("check"); s.add_argument("url"); s.add_argument("body"); s.add_argument("sig")
    s.add_argument("status", type=int); s.add_argument("header", nargs="?"); s.set_defaults(fn=cmd_check)
    s = sub.add_parser("client"); s.add_argument("url"); s.add_argument("body"); s.add_argument("sig")
    s.add_argument("n", type=int); s.add_argument("--status", type=int, default=200)
    s.add_argument("--unique-ids", default=""); s.add_argument("--conns", type=int, default=1)
    s.set_defaults(fn=cmd_client)
    s = sub.add_parser("idle"); s.add_argument("url"); s.add_argument("body"); s.add_argument("sig")
    s.add_argument("--pid", type=int, required=True); s.add_argument("--n", type=int, default=2000)
    s.add_argument("--settle", type=float, default=2.0); s.add_argument("--system", default="?")
    s.set_defaults(fn=cmd_idle)
    s = sub.add_parser("record")
    for name in ("out", "system", "scenario", "kind", "wrk-output", "note"):
        s.add_argument(f"--{name}", required=name != "note", default="")
    for name in ("size", "conns", "expect-status", "cpu-before", "cpu-after", "sys-before", "sys-after",
                 "up-before", "up-after",
                 "rss-kib", "accepts-before", "accepts-after"):
        s.add_argument(f"--{name}", type=int, required=True)
    s.add_argument("--queue", default="", help="a queued cell: the output of `drain`")
    s.add_argument("--aux-before", type=int, default=0, help="CPU ticks of the cell's Redis (cluster)")
    s.add_argument("--aux-after", type=int, default=0)
    s.set_defaults(fn=cmd_record)
    s = sub.add_parser("report"); s.add_argument("results"); s.add_argument("--markdown")
    s.set_defaults(fn=cmd_report)
    s = sub.add_parser("hashref"); s.set_defaults(fn=cmd_hashref)
    s = sub.add_parser("breakdown"); s.add_argument("file"); s.add_argument("--requests", type=int)
    s.set_defaults(fn=cmd_breakdown)
    s = sub.add_parser("top"); s.add_argument("file"); s.add_argument("-n", type=int, default=25)
    s.add_argument("--requests", type=int); s.add_argument("--total", type=int); s.set_defaults(fn=cmd_top)
    s = sub.add_parser("cgtotal"); s.add_argument("file"); s.set_defaults(fn=cmd_cgtotal)
    s = sub.add_parser("strace"); s.add_argument("file"); s.add_argument("--requests", type=int, required=True)
    s.add_argument("--name", default=""); s.set_defaults(fn=cmd_strace)
    s = sub.add_parser("cgsplit"); s.add_argument("file"); s.add_argument("--requests", type=int)
    s.add_argument("--name", default=""); s.set_defaults(fn=cmd_cgsplit)
    args = p.parse_args()
    args.fn(args)


if __name__ == "__main__":
    main()
