#!/usr/bin/env python3
"""Tables of one side-by-side run (bench/side-by-side.sh): median [min–max] over rounds for
Anytime and each peer (ejabberd, Synapse), and the ratio of the medians, Anytime / peer (for rates
higher is better for Anytime; for latency, CPU and memory lower is)."""

import json
import pathlib
import statistics
import sys


def load(out, server, scenario):
    files = sorted(out.glob(f"{server}-{scenario}-*.json"), key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    return [json.loads(p.read_text()) for p in files]


def fmt(values, digits):
    values = [v for v in values if v is not None]
    if not values:
        return "n/a", None
    med = statistics.median(values)
    f = f"{{:,.{digits}f}}"
    if len(values) == 1:
        return f.format(med), med
    return f"{f.format(med)} [{f.format(min(values))}–{f.format(max(values))}]", med


def row(label, a_values, b_values, digits=0, lower_is_better=False):
    a, am = fmt(a_values, digits)
    b, bm = fmt(b_values, digits)
    if am and bm:
        r = am / bm
        # Small ratios keep 2 significant digits (Anytime's latency against Synapse's is ~0.004).
        ratio = (f"{r:.2f}" if r >= 0.1 else f"{r:.2g}") + (" (lower is better)" if lower_is_better else "")
    else:
        ratio = "n/a"
    return f"| {label} | {a} | {b} | {ratio} |"


def header(title, note, peer="ejabberd"):
    return [f"### {title}", "", note, "", f"| measure | Anytime | {peer} | Anytime / {peer} |", "| --- | --- | --- | --- |"]


def latency(out):
    a, b = load(out, "anytime", "latency"), load(out, "ejabberd", "latency")
    if not a or not b:
        return []
    lines = header(
        "1:1 messages (scenario 2)",
        "Closed loop = maximum rate (Anytime: durable, window of unanswered sends; ejabberd: in memory, "
        "window of unreceived messages). Open loop = fixed schedule at a fraction of each server's own "
        "maximum; latency from the intended send time to receipt.",
    )
    lines.append(row("max delivered msg/s (closed loop)", [r["max"]["messages_per_second"] for r in a], [r["max"]["messages_per_second"] for r in b]))
    lines.append(row("… server CPU, cores", [r["max"]["cpu"]["server_cores"] for r in a], [r["max"]["cpu"]["server_cores"] for r in b], 2, True))
    lines.append(row("… load tool CPU, cores", [r["max"]["cpu"]["load_cores"] for r in a], [r["max"]["cpu"]["load_cores"] for r in b], 2, True))
    fractions = [f for f, _ in a[0]["runs"]]
    for i, fraction in enumerate(fractions):
        pct = f"{fraction * 100:.0f}%"
        ar = [r["runs"][i][1] for r in a]
        br = [r["runs"][i][1] for r in b]
        lines.append(row(f"at {pct}: offered msg/s", [r["target_rate"] for r in ar], [r["target_rate"] for r in br]))
        lines.append(row(f"at {pct}: delivered msg/s", [r["delivered_per_second"] for r in ar], [r["delivered_per_second"] for r in br]))
        for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
            lines.append(row(f"at {pct}: latency {name}, ms", [r["latency"][key] for r in ar], [r["latency"][key] for r in br], 2, True))
        lines.append(row(f"at {pct}: server CPU, cores", [r["cpu"]["server_cores"] for r in ar], [r["cpu"]["server_cores"] for r in br], 2, True))
    # The same offered rate for both: the lower of the two maxima decides what is comparable.
    return lines + [""]


def fanout(out):
    a, b = load(out, "anytime", "fanout"), load(out, "ejabberd", "fanout")
    if not a or not b:
        return []
    members = a[0]["members"]
    lines = header(
        f"Group fan-out, {members} online members (scenario 3)",
        "Anytime: group conversation, 16 sends awaiting `Sent` (durable); ejabberd: MUC room, "
        "16 messages awaiting their reflection to the sender (in memory).",
    )
    lines.append(row("deliveries/s", [r["deliveries_per_second"] for r in a], [r["deliveries_per_second"] for r in b]))
    lines.append(row("time to last delivery p50, ms", [r["last_delivery_ms_p50"] for r in a], [r["last_delivery_ms_p50"] for r in b], 1, True))
    lines.append(row("time to last delivery p99, ms", [r["last_delivery_ms_p99"] for r in a], [r["last_delivery_ms_p99"] for r in b], 1, True))
    return lines + [""]


def connections(out):
    a, b = load(out, "anytime", "connections"), load(out, "ejabberd", "connections")
    if not a or not b:
        return []
    n = a[0]["connections"]
    lines = header(
        f"Idle authenticated connections, {n:,} (scenario 1)",
        "Server RSS growth per connection while idle; Anytime: 10 devices per account, 2 connections "
        "per device; ejabberd: one account per connection, initial presence sent.",
    )
    lines.append(row("server RSS per connection, bytes", [r["server_rss_bytes_per_connection"] for r in a], [r["server_rss_bytes_per_connection"] for r in b], 0, True))
    lines.append(row("connect + authenticate, per second", [r["connects_per_second"] for r in a], [r["connects_per_second"] for r in b]))
    return lines + [""]


def matrix(out):
    """Anytime and Synapse (scenario "matrix" of side-by-side.sh)."""
    lines = []
    a, b = load(out, "anytime", "durable"), load(out, "synapse", "throughput")
    if a and b:
        lines += header(
            "Anytime and Synapse: 1:1 messages, closed loop",
            f"{a[0]['pairs']} pairs, window {a[0]['window']} unanswered sends per sender (Anytime: `Sent` after "
            "the fsynced SQLite commit; Synapse: the 200 to `PUT …/send` after the event is in PostgreSQL); "
            "a message counts when its receiver has it (Synapse: through `/sync`). Messages per run: Anytime "
            f"{a[0]['messages']:,}, Synapse {b[0]['messages']:,}.",
            "Synapse",
        )
        lines.append(row("delivered msg/s", [r["messages_per_second"] for r in a], [r["messages_per_second"] for r in b]))
        lines.append(row("server CPU, cores", [r["cpu"]["server_cores"] for r in a], [r["cpu"]["server_cores"] for r in b], 2, True))
        lines.append(row("load tool CPU, cores", [r["cpu"]["load_cores"] for r in a], [r["cpu"]["load_cores"] for r in b], 2, True))
        lines.append("")
    a, b = load(out, "anytime", "fixedrate"), load(out, "synapse", "fixedrate")
    if a and b:
        lines += header(
            "Anytime and Synapse: 1:1 messages, open loop at the same fixed rates",
            "Every sender on a fixed schedule; latency from the intended send time (in the payload) to receipt.",
            "Synapse",
        )
        for i, (_, first) in enumerate(a[0]["runs"]):
            rate = f"{first['target_rate']:,.0f} msg/s"
            ar = [r["runs"][i][1] for r in a]
            br = [r["runs"][i][1] for r in b]
            lines.append(row(f"at {rate}: delivered msg/s", [r["delivered_per_second"] for r in ar], [r["delivered_per_second"] for r in br], 1))
            for key, name in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
                lines.append(row(f"at {rate}: latency {name}, ms", [r["latency"][key] for r in ar], [r["latency"][key] for r in br], 2, True))
            lines.append(row(f"at {rate}: server CPU, cores", [r["cpu"]["server_cores"] for r in ar], [r["cpu"]["server_cores"] for r in br], 2, True))
        lines.append("")
    a, b = load(out, "anytime", "roomfanout"), load(out, "synapse", "roomfanout")
    if a and b:
        lines += header(
            f"Anytime and Synapse: group fan-out, {a[0]['members']} online members, {a[0]['messages']} messages",
            "One sender, 16 sends unanswered (Anytime: `Sent`; Synapse: the answer to `PUT …/send`); every "
            "member (sender included) receives (Synapse: each member long-polls `/sync`).",
            "Synapse",
        )
        lines.append(row("deliveries/s", [r["deliveries_per_second"] for r in a], [r["deliveries_per_second"] for r in b]))
        lines.append(row("time to last delivery p50, ms", [r["last_delivery_ms_p50"] for r in a], [r["last_delivery_ms_p50"] for r in b], 1, True))
        lines.append(row("time to last delivery p99, ms", [r["last_delivery_ms_p99"] for r in a], [r["last_delivery_ms_p99"] for r in b], 1, True))
        lines.append("")
    return lines


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    info = (out / "run.txt").read_text() if (out / "run.txt").exists() else ""
    lines = ["```", info.strip(), "```", ""]
    lines += latency(out) + fanout(out) + connections(out) + matrix(out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
