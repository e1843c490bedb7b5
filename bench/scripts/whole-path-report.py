#!/usr/bin/env python3
"""bench/whole-path.sh's report: its results (row<TAB>key<TAB>value lines) as Markdown and as JSON, with every
ktctl figure as a ratio to each reference from the same run, and the goals met or not.

Usage: whole-path-report.py RESULTS.tsv OUT.md OUT.json
"""
import json
import sys

ROWS = [
    ("veth", "veth, kernel to kernel (the ceiling)"),
    ("tun", "`ktctl connect` tun"),
    ("socks", "`ktctl connect --mode socks` (curl --socks5-hostname)"),
    ("socks-open", "`ktctl connect --mode socks --proxy-allow-users all` (no owner check)"),
    ("ssh-aes", "OpenSSH `ssh -L` aes128-gcm@openssh.com"),
    ("ssh-default", "OpenSSH `ssh -L` default cipher"),
    ("ssh-socks", "OpenSSH `ssh -D` aes128-gcm@openssh.com (curl --socks5-hostname)"),
    ("sshuttle", "sshuttle (nft method) over the same sshd"),
    ("wireguard", "wireguard-go at both ends"),
]
KTCTL = ("tun", "socks", "socks-open")
REFERENCES = ("veth", "ssh-aes", "ssh-default", "ssh-socks", "sshuttle", "wireguard")
NO_IPERF = {row: "n/a: iperf3 has no SOCKS" for row in ("socks", "socks-open", "ssh-socks")}
NO_CPS = {row: "n/a: wrk has no SOCKS" for row in ("socks", "socks-open", "ssh-socks")}


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def main():
    results_path, markdown_path, json_path = sys.argv[1:4]
    meta, rows = {}, {}
    with open(results_path) as results:
        for line in results:
            parts = line.rstrip("\n").split("\t", 2)
            if len(parts) != 3:
                continue
            row, key, value = parts
            if row == "meta":
                meta[key] = value
            else:
                rows.setdefault(row, {})[key] = value

    def get(row, key):
        return rows.get(row, {}).get(key)

    def figure(row, key):
        return number(get(row, key))

    def cell(row, key, digits=2, missing=None):
        """A figure, or why there is none."""
        if row not in rows:
            return "not run"
        value = get(row, key)
        if value is None:
            if missing:
                return missing.get(row, "—") if isinstance(missing, dict) else missing
            return "—"
        parsed = number(value)
        if parsed is None:
            return value
        return f"{parsed:.{digits}f}"

    def pair(row, first, second, digits=2, missing=None):
        a, b = cell(row, first, digits, missing), cell(row, second, digits, missing)
        return a if a == b and number(a) is None else f"{a} / {b}"

    def label(row, text):
        cipher = get(row, "cipher")
        if cipher and cipher not in text:
            return f"{text} (negotiated: {cipher})"
        return text

    lines = [f"# The whole data path, side by side ({meta.get('date', '?')})", ""]
    lines += [
        f"`bench/whole-path.sh` on {meta.get('machine', '?')}; {meta.get('parameters', '')}; "
        f"load average {meta.get('load_before', '?')} before, {meta.get('load_after', '?')} after; "
        f"the run took {int(number(meta.get('seconds')) or 0) // 60} min {int(number(meta.get('seconds')) or 0) % 60} s. "
        f"ktctl {meta.get('ktctl_version', '?')}, ktlab and kt-shadow from `{meta.get('kt_bin', '?')}`. "
        f"Tools: {meta.get('tools', '?')}.",
        "",
        "- iperf3: laptop → cluster (upload), median Gbit/s of RUNS runs (each run in the JSON); curl: cluster → "
        "laptop (download) of SIZE bytes; the same HTTP server (`bench/scripts/whole-path-server.c`, a thread per connection) at the far end of every path.",
        "- connect+request: REQUESTS sequential connections from one Python process, each connect (SOCKS5 greeting and "
        "CONNECT included for the SOCKS rows), one `GET` as curl sends it (TCP_NODELAY, keep-alive), the whole "
        "answer read, close; connect() alone is until the socket is usable. The client closes first, as curl does, so "
        "a far end that closes late (OpenSSH's 44 ms in anchor-measurements.md, with a server that closed first) "
        "adds nothing here.",
        "- connections/s: `wrk -t1 -c8 -d<CPS_SECONDS>s -H 'Connection: close'` (a new connection per request; "
        "the server closes).",
        "- CPU: user + system time from /proc/<pid>/stat of each process of the path over the curl, seconds per GB "
        "(10^9 bytes).",
        "",
        "| path | 1 stream Gbit/s | 4 streams Gbit/s | curl MB/s | connect+request p50 / p99 ms | connect() p50 / p99 ms "
        "| connections/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, text in ROWS:
        if row not in rows:
            continue
        error = get(row, "error")
        if error and not any(key in rows[row] for key in ("iperf1", "curl", "latency_p50")):
            lines.append(f"| {label(row, text)} | failed: {error} | | | | | |")
            continue
        lines.append(
            f"| {label(row, text)} | {cell(row, 'iperf1', 2, NO_IPERF)} | {cell(row, 'iperf4', 2, NO_IPERF)} "
            f"| {cell(row, 'curl', 0)} | {pair(row, 'latency_p50', 'latency_p99')} "
            f"| {pair(row, 'connect_p50', 'connect_p99')} | {cell(row, 'cps', 0, NO_CPS)} |")
    lines.append("")
    failed = [(row, get(row, "error")) for row, _ in ROWS if get(row, "error")]
    for row, error in failed:
        lines.append(f"- **{row} failed**: {error}")
    for row, _ in ROWS:
        for key in ("latency_failures", "cps_errors"):
            if get(row, key):
                lines.append(f"- {row}: {key.replace('_', ' ')}: {get(row, key)}")
    if get("sshuttle", "dropped") is not None:
        lines.append(
            f"- sshuttle: a filter rule in the laptop namespace (output hook, after sshuttle's nat redirect) drops every "
            f"packet still addressed to the target. Before sshuttle started, a direct connection was dropped by it "
            f"(packets dropped: {get('sshuttle', 'drop_check')}); while sshuttle ran it dropped {get('sshuttle', 'dropped')}: "
            f"every figure of the row went through sshuttle.")
    if failed or any(get(row, "latency_failures") for row, _ in ROWS) or get("sshuttle", "dropped") is not None:
        lines.append("")

    # CPU per process.
    lines += ["## CPU seconds per GB, each process of the path (over the curl)", "", "| path | processes |", "|---|---|"]
    for row, text in ROWS:
        cpu = [(key[4:], value) for key, value in rows.get(row, {}).items() if key.startswith("cpu:")]
        if cpu:
            total = sum(number(value) or 0 for _, value in cpu)
            lines.append(f"| {text} | " + ", ".join(f"{name} {value}" for name, value in cpu)
                         + f"; total {total:.2f} |")
        elif row == "veth" and row in rows:
            lines.append(f"| {text} | — (the kernel's only) |")
    lines.append("")

    # ktctl only: DNS and memory.
    idle = figure("tun", "rss_idle_kib")
    after = figure("tun", "rss_after_kib")
    held = figure("tun", "rss_flows_kib")
    flows = figure("tun", "flows")
    per_flow = (held - idle) / flows if held is not None and idle is not None and flows else None
    if "tun" in rows and (idle is not None or get("tun", "dns_uncached_p50")):
        lines += ["## ktctl tun: DNS and memory", "",
                  "| figure | value |", "|---|---|",
                  f"| DNS uncached (a fresh `<random>.nonexistent.svc.cluster.local` each time: through the tunnel "
                  f"to the cluster DNS), p50 / p99 ms | {pair('tun', 'dns_uncached_p50', 'dns_uncached_p99', 3)} "
                  f"({get('tun', 'dns_uncached_answers') or '?'}) |",
                  f"| DNS first lookup of `wptarget.default.svc.cluster.local`, ms | {cell('tun', 'dns_first_p50', 3)} "
                  f"({get('tun', 'dns_first_answers') or '?'}) |",
                  f"| DNS cached (that name again), p50 / p99 ms | {pair('tun', 'dns_cached_p50', 'dns_cached_p99', 3)} "
                  f"({get('tun', 'dns_cached_answers') or '?'}) |",
                  f"| RSS idle, just connected | {cell('tun', 'rss_idle_kib', 0)} KiB |",
                  f"| RSS with {int(flows or 0)} idle flows open (each did one request first) "
                  f"| {cell('tun', 'rss_flows_kib', 0)} KiB |",
                  f"| per idle flow ((with flows − idle) ÷ flows) "
                  f"| {'%.2f KiB' % per_flow if per_flow is not None else '—'} |",
                  f"| RSS 2 s after those flows closed | {cell('tun', 'rss_released_kib', 0)} KiB |",
                  f"| RSS idle 4 s after all the transfers of the row | {cell('tun', 'rss_after_kib', 0)} KiB |",
                  f"| of which anonymous (the process's own memory; the rest is the binary's and the libraries' "
                  f"pages): just connected / right after the transfers / 4 s later "
                  f"| {cell('tun', 'anon_idle_kib', 0)} / {cell('tun', 'anon_busy_kib', 0)} / "
                  f"{cell('tun', 'anon_after_kib', 0)} KiB |",
                  "",
                  "DNS for the references: n/a (they carry no resolver; socks mode resolves names in the shadow, "
                  "inside each CONNECT).", ""]
        for row in ("socks", "socks-open"):
            if get(row, "rss_idle_kib"):
                lines += [f"{row}: ktctl's RSS idle, just connected: {cell(row, 'rss_idle_kib', 0)} KiB.", ""]

    # Ratios: each ktctl figure against each reference of the same run.
    metrics = [("iperf1", "1 stream", True), ("iperf4", "4 streams", True), ("curl", "curl", True),
               ("latency_p50", "connect+request p50", False), ("latency_p99", "connect+request p99", False),
               ("cps", "connections/s", True)]
    ratio_records = []
    lines += ["## ktctl against each reference (same run)", "",
              "Throughput and connections/s: ktctl ÷ reference (above 1: ktctl is faster). Latency: ktctl ÷ reference "
              "(below 1: ktctl is quicker).", "",
              "| ktctl | reference | " + " | ".join(name for _, name, _ in metrics) + " |",
              "|---|---|" + "---|" * len(metrics)]
    for mine in KTCTL:
        if mine not in rows:
            continue
        for reference in REFERENCES:
            if reference not in rows:
                continue
            cells = []
            for key, name, _ in metrics:
                a, b = figure(mine, key), figure(reference, key)
                if a is None or b is None or b == 0:
                    cells.append("—")
                    continue
                cells.append(f"{a / b:.2f}×")
                ratio_records.append({"ktctl": mine, "reference": reference, "metric": key, "ktctl_value": a,
                                      "reference_value": b, "ratio": round(a / b, 4)})
            if any(c != "—" for c in cells):
                lines.append(f"| {mine} | {reference} | " + " | ".join(cells) + " |")
    lines.append("")
    cpu_pairs = [("tun", "ktctl", "ssh-aes", "ssh"), ("tun", "ktctl", "ssh-default", "ssh"),
                 ("tun", "ktctl", "sshuttle", "sshuttle (python)"), ("tun", "ktctl", "wireguard", "wireguard-go laptop"),
                 ("tun", "kt-shadow", "ssh-aes", "sshd"), ("tun", "kt-shadow", "ssh-default", "sshd"),
                 ("tun", "kt-shadow", "wireguard", "wireguard-go cluster"),
                 ("socks", "ktctl", "ssh-socks", "ssh"), ("socks", "kt-shadow", "ssh-socks", "sshd"),
                 ("socks-open", "ktctl", "ssh-socks", "ssh"), ("socks-open", "kt-shadow", "ssh-socks", "sshd")]
    cpu_lines = []
    for mine, process, reference, theirs in cpu_pairs:
        a, b = figure(mine, f"cpu:{process}"), figure(reference, f"cpu:{theirs}")
        if a is None or b is None or b == 0:
            continue
        cpu_lines.append(f"| {mine}'s {process} | {reference}'s {theirs} | {a:.2f} | {b:.2f} | {a / b:.2f}× |")
        ratio_records.append({"ktctl": mine, "reference": reference, "metric": f"cpu:{process} vs cpu:{theirs}",
                              "ktctl_value": a, "reference_value": b, "ratio": round(a / b, 4)})
    if cpu_lines:
        lines += ["CPU seconds per GB (below 1: ktctl's process spends less):", "",
                  "| ktctl's process | reference's process | ktctl s/GB | reference s/GB | ratio |",
                  "|---|---|---|---|---|"] + cpu_lines + [""]

    # Goals.
    def goal(text, value, limit, met, shown):
        if value is None or limit is None:
            return {"goal": text, "met": None, "value": None, "detail": "not measured"}
        return {"goal": text, "met": bool(met(value, limit)), "value": value, "limit": limit, "detail": shown}

    def ratio(a, b):
        return a / b if a is not None and b else None

    tun1 = figure("tun", "iperf1")
    goals = [
        goal("ktctl CPU s/GB ≤ ssh client's (ssh -L aes-gcm)", figure("tun", "cpu:ktctl"), figure("ssh-aes", "cpu:ssh"),
             lambda v, l: v <= l, f"{figure('tun', 'cpu:ktctl')} vs {figure('ssh-aes', 'cpu:ssh')}"),
        goal("kt-shadow CPU s/GB ≤ sshd's (ssh -L aes-gcm)", figure("tun", "cpu:kt-shadow"), figure("ssh-aes", "cpu:sshd"),
             lambda v, l: v <= l, f"{figure('tun', 'cpu:kt-shadow')} vs {figure('ssh-aes', 'cpu:sshd')}"),
    ]
    for reference, factor in (("ssh-aes", 1.0), ("wireguard", 10.0), ("sshuttle", 25.0)):
        r = ratio(tun1, figure(reference, "iperf1"))
        goals.append(goal(f"tun 1 stream ≥ {factor:g}× {reference}", r, factor, lambda v, l: v >= l,
                          f"{r:.2f}× ({tun1} vs {figure(reference, 'iperf1')} Gbit/s)" if r is not None else ""))
    p50, p99 = figure("tun", "latency_p50"), figure("tun", "latency_p99")
    goals.append(goal("tun connect+request p50 ≤ 0.6 ms", p50, 0.6, lambda v, l: v <= l, f"{p50} ms"))
    goals.append(goal("tun connect+request p99 ≤ 2 ms", p99, 2.0, lambda v, l: v <= l, f"{p99} ms"))
    idle_mb = max(x for x in (idle, after) if x is not None) * 1024 / 1e6 if (idle or after) else None
    goals.append(goal("ktctl idle RSS ≤ 40 MB (10^6 bytes; the larger of just connected and after the transfers)",
                      idle_mb, 40.0, lambda v, l: v <= l,
                      f"{idle_mb:.1f} MB (just connected {idle:.0f} KiB, after transfers {after:.0f} KiB)"
                      if idle_mb is not None and idle is not None and after is not None else
                      (f"{idle_mb:.1f} MB" if idle_mb is not None else "")))
    goals.append(goal("≤ 4 KiB per idle flow", per_flow, 4.0, lambda v, l: v <= l,
                      f"{per_flow:.2f} KiB" if per_flow is not None else ""))
    lines += ["## Goals", "", "| goal | result | figure |", "|---|---|---|"]
    for g in goals:
        result = "not measured" if g["met"] is None else ("met" if g["met"] else "**not met**")
        lines.append(f"| {g['goal']} | {result} | {g['detail']} |")
    lines.append("")

    with open(markdown_path, "w") as markdown:
        markdown.write("\n".join(lines))
    document = {"meta": meta, "rows": {}, "ratios": ratio_records, "goals": goals}
    for row, text in ROWS:
        if row in rows:
            entry = {"label": text}
            for key, value in rows[row].items():
                if key.endswith("_runs"):
                    entry[key] = [float(v) for v in value.split()]
                else:
                    parsed = number(value)
                    entry[key] = parsed if parsed is not None and key not in ("version", "ktctl_version") else value
            if row in NO_IPERF:
                entry.setdefault("iperf1", NO_IPERF[row])
                entry.setdefault("iperf4", NO_IPERF[row])
                entry.setdefault("cps", NO_CPS[row])
            if row == "tun" and per_flow is not None:
                entry["kib_per_flow"] = round(per_flow, 3)
            if row != "tun":
                entry.setdefault("dns", "n/a")
            document["rows"][row] = entry
    with open(json_path, "w") as out:
        json.dump(document, out, indent=2, ensure_ascii=False)
        out.write("\n")


if __name__ == "__main__":
    main()
