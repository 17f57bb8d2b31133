#!/usr/bin/env python3
"""The point-in-time join peer: DuckDB's ASOF JOIN on the files of
`tessera-bench offline`, timed the way the bench times `tessera pit-join`.

It joins the spine (`entity_id`, `ts`, `label`) with the group's data file
(`entity_id`, `event_ts`, `f0`..`f9`): for each spine row, the features
of the row of its entity with the greatest `event_ts <= ts`, spine rows
without one kept with nulls (ASOF LEFT JOIN), written to a zstd Parquet
file. Tessera's join also keeps the spine's order and applies TTL, which
this query does not ask of DuckDB.

Prints one JSON line: seconds end to end (query and file written, in a
fresh connection), the peak RSS of this process and DuckDB's version.
`pip install duckdb` first (bench/README or docs/benchmarks.md).

    bench/peers/duckdb_asof.py --dir DIR [--rows N] [--entities N]
                               [--spine-rows N] [--threads N]
"""

import argparse
import json
import os
import resource
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", required=True, help="tessera-bench offline's --dir")
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--entities", type=int, default=1_000_000)
    parser.add_argument("--spine-rows", type=int, default=1_000_000)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    try:
        import duckdb
    except ImportError:
        print("duckdb_asof.py: DuckDB is missing; pip install duckdb", file=sys.stderr)
        return 1
    data = os.path.join(args.dir, f"offline-{args.rows}-{args.entities}.parquet")
    spine = os.path.join(args.dir, f"spine-{args.spine_rows}-{args.entities}.parquet")
    out = os.path.join(args.dir, "training-duckdb.parquet")
    for path in (data, spine):
        if not os.path.exists(path):
            print(f"duckdb_asof.py: {path} is missing; run tessera-bench offline first",
                  file=sys.stderr)
            return 1
    features = ", ".join(f"f.f{i}" for i in range(10))
    query = f"""
        COPY (
            SELECT s.*, {features}, f.event_ts AS feature_event_ts
            FROM read_parquet('{spine}') s
            ASOF LEFT JOIN read_parquet('{data}') f
              ON s.entity_id = f.entity_id AND s.ts >= f.event_ts
        ) TO '{out}' (FORMAT parquet, COMPRESSION zstd)
    """
    started = time.monotonic()
    con = duckdb.connect()
    con.execute(f"SET threads = {args.threads}")
    con.execute(query)
    con.close()
    secs = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({
        "peer": "duckdb",
        "version": duckdb.__version__,
        "pit_join_secs": round(secs, 3),
        "peak_rss_mib": peak_kib // 1024,
        "threads": args.threads,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
