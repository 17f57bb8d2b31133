"""The report of bench/compare.sh: a markdown table, a PNG plot of latency
percentiles against throughput, and the section of docs/benchmarks.md
between the `<!-- compare:begin -->` and `<!-- compare:end -->` markers."""

import argparse
import json
import os
import platform
import subprocess

BEGIN = "<!-- compare:begin -->"
END = "<!-- compare:end -->"


def command_output(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "unknown"


def machine():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return f"{os.cpu_count()} vCPUs ({model}), {mem_kib / 2**20:.0f} GiB, Linux {platform.release()}"


def table(rows):
    lines = [
        "| system | connections | mode | slates/s | p50 | p99 | p999 | server CPU / slate | client CPU / slate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cpu = r.get("server_cpu_us_per_slate")
        lines.append(
            "| {name} | {conns} | {mode} | {sps:,.0f} | {p50:,.0f} µs | {p99:,.0f} µs | {p999:,.0f} µs | {cpu} | {client:.0f} µs |".format(
                name=r["name"],
                conns=r["connections"],
                mode=r["mode"] + (f", {r['writes_per_s']:,.0f} writes/s" if r.get("writes_per_s") else ""),
                sps=r["slates_per_s"],
                p50=r["p50_us"],
                p99=r["p99_us"],
                p999=r["p999_us"],
                cpu=f"{cpu:.0f} µs" if cpu is not None else "",
                client=r["client_cpu_us_per_slate"],
            )
        )
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    names = sorted({r["name"] for r in rows if "open" not in r["name"] and "mixed" not in r["name"] and "read-only" not in r["name"]})
    for name in names:
        # In connection order: the curve a load generator walks.
        ordered = sorted((r for r in rows if r["name"] == name), key=lambda r: r["connections"])
        pts = [(r["slates_per_s"], r["p50_us"], r["p99_us"]) for r in ordered]
        xs = [p[0] for p in pts]
        line = ax.plot(xs, [p[2] for p in pts], marker="o", label=f"{name} p99")[0]
        ax.plot(xs, [p[1] for p in pts], marker=".", linestyle="--", color=line.get_color(), label=f"{name} p50")
    opens = sorted((r["slates_per_s"], r["p99_us"]) for r in rows if "open" in r["name"])
    if opens:
        ax.plot([o[0] for o in opens], [o[1] for o in opens], marker="s", label="tessera open loop p99")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("slates/s (1, 4 and 16 connections)")
    ax.set_ylabel("latency, µs")
    ax.set_title("News-feed slate (1 user + 50 articles), one 2-vCPU machine")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--results", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--docs", required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--articles", type=int, required=True)
    p.add_argument("--duration", type=int, required=True)
    p.add_argument("--quick", default="no")
    a = p.parse_args()
    rows = [json.loads(l) for l in open(a.results) if l.strip()]
    md = table(rows)
    with open(os.path.join(a.out, "table.md"), "w") as f:
        f.write(md + "\n")
    png = os.path.join(a.out, "latency.png")
    plot(rows, png)
    docs_png = os.path.join(os.path.dirname(a.docs), "compare-latency.png")
    plot(rows, docs_png)
    rev = command_output(["git", "rev-parse", "--short", "HEAD"])
    section = "\n".join(
        [
            BEGIN,
            f"Written by `bench/compare.sh{' --quick' if a.quick == 'yes' else ''}` on commit {rev}: "
            f"{a.users:,} users and {a.articles:,} articles, {a.duration}-second runs.",
            "",
            f"- Machine: {machine()}; client and servers share it.",
            f"- Versions: {command_output(['redis-server', '--version'])}; Apache Cassandra 2.1.0 (a 2014 release) on "
            f"{command_output(['java', '-version'])}; {command_output(['rustc', '--version'])}.",
            "- Commands: `bench/compare.sh [--quick]` (the per-target commands are in the section above).",
            "",
            md,
            "",
            "![latency against throughput](compare-latency.png)",
            END,
        ]
    )
    text = open(a.docs).read()
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n## `bench/compare.sh`\n\n" + section + "\n"
    with open(a.docs, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
