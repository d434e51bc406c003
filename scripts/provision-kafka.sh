#!/usr/bin/env bash
# Make a Kafka broker answer: WORKER_KAFKA_BROKER_URL if one answers there; else `docker compose up -d kafka`
# where images can be pulled; else a local Apache Kafka (KRaft, combined mode) from Maven Central.
#   provision-kafka.sh [up|down|libs]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cache=${DSW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/dsw}
version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$here/scripts/kafka/pom.xml")
# Keyed by the pom's content, so a changed pom resolves again.
libs="$cache/kafka-$version-$(sha256sum "$here/scripts/kafka/pom.xml" | cut -c1-12)/libs"
state="$here/.local/kafka"
log_dir="$here/.local/log"
pid_file="$state/kafka.pid"
python=${DSW_PYTHON:-$here/.venv/bin/python}
broker=${WORKER_KAFKA_BROKER_URL:-127.0.0.1:9092}

say() { printf '[provision:kafka] %s\n' "$*" >&2; }
answers() { "$python" "$here/scripts/wait_kafka.py" "$broker" "$1"; }

stop_local() {
  if [ -f "$pid_file" ] && kill -0 "$(cat "$pid_file")" 2>/dev/null; then
    local pid; pid=$(cat "$pid_file")
    say "stopping the local broker (pid $pid)"
    kill "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  else
    say "no local broker runs"
  fi
  rm -f "$pid_file"
}

resolve_libs() {
  [ -f "$libs/.complete" ] && return 0
  say "resolving Apache Kafka $version from Maven Central into $libs"
  mkdir -p "$libs"
  mvn -q -B -Dstyle.color=never -f "$here/scripts/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$libs" >&2
  touch "$libs/.complete"
}

if [ "${1:-up}" = libs ]; then
  resolve_libs
  echo "$libs"
  exit 0
fi
if [ "${1:-up}" = down ]; then
  stop_local
  if docker compose version >/dev/null 2>&1 && [ -n "$(docker compose -f "$here/docker-compose.yaml" ps -q kafka 2>/dev/null)" ]; then
    docker compose -f "$here/docker-compose.yaml" stop kafka
  fi
  exit 0
fi

if answers 3; then
  say "a broker answers at $broker"
  exit 0
fi
if [ -n "${WORKER_KAFKA_BROKER_URL:-}" ] && [ "$broker" != 127.0.0.1:9092 ] && [ "$broker" != localhost:9092 ]; then
  say "no broker answers at WORKER_KAFKA_BROKER_URL=$broker; unset it to start a local one" >&2
  exit 1
fi
if docker compose version >/dev/null 2>&1 && timeout 120 docker compose -f "$here/docker-compose.yaml" pull -q kafka >/dev/null 2>&1; then
  say "starting Kafka with docker compose"
  docker compose -f "$here/docker-compose.yaml" up -d kafka
  answers 90 && exit 0
  say "the compose broker did not answer" >&2
  exit 1
fi

resolve_libs
mkdir -p "$state/data" "$log_dir"
sed -e "s:@DATA@:$state/data:" "$here/scripts/kafka/server.properties" > "$state/server.properties"
java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
           "-Dlog4j2.configurationFile=$here/scripts/kafka/log4j2.properties" "-Dkafka.logs.dir=$log_dir")
if [ ! -f "$state/data/meta.properties" ]; then
  say "formatting the KRaft storage in $state/data"
  java "${java_opts[@]}" -cp "$libs/*" kafka.tools.StorageTool format \
    --cluster-id "$(cat /proc/sys/kernel/random/uuid | tr -d - | head -c 22)" \
    --config "$state/server.properties" >"$log_dir/kafka-format.log" 2>&1 \
    || { cat "$log_dir/kafka-format.log" >&2; exit 1; }
fi
stop_local >/dev/null
say "starting Apache Kafka $version on $broker (log: $log_dir/kafka.log)"
# setsid: the broker must outlive the shell that provisions it.
setsid nohup java "${java_opts[@]}" -cp "$libs/*" kafka.Kafka "$state/server.properties" \
  >"$log_dir/kafka.log" 2>&1 < /dev/null &
echo $! > "$pid_file"
if answers 90; then
  say "the broker answers"
  exit 0
fi
say "the broker did not answer within 90 s; see $log_dir/kafka.log" >&2
tail -n 30 "$log_dir/kafka.log" >&2 || true
exit 1
