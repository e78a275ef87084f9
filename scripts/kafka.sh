#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, combined broker+controller)
# for local development and tests, without Docker.
#
# The broker jars come from Maven Central through Maven (scripts/kafka/pom.xml)
# and are cached in .kafka/lib under the repo root; all state lives in .kafka/
# (git-ignored):
#   .kafka/lib/               cached jars (refetched only when the pom changes)
#   .kafka/data/              KRaft metadata + topic data
#   .kafka/server.properties  rendered from scripts/kafka/server.properties.template
#   .kafka/broker.log         broker output (previous run's in broker.log.1)
#   .kafka/broker.pid         broker pid
#
# Usage: scripts/kafka.sh COMMAND [ARGS]
#   start      fetch jars if needed, format storage if needed, start the broker
#              in the background and wait until it answers a metadata request;
#              returns 0 at once if it is already up
#   stop       SIGTERM, wait, SIGKILL after a deadline; removes the pid file
#   restart    stop + start, keeping data
#   status     print whether the broker is up (exit 0 up, 1 running but not
#              answering, 3 not running)
#   reset      stop the broker and delete .kafka/data (next start formats anew)
#   fetch      only fetch/cache the jars
#   bootstrap  print the bootstrap address (127.0.0.1:PORT)
#   sasl-bootstrap  print the SASL listener's address (127.0.0.1:KAFKA_SASL_PORT)
#   topics ARGS...     run Kafka's TopicCommand against the broker, e.g.
#                      scripts/kafka.sh topics --create --topic t --partitions 3
#   run-class CLASS ARGS...  run any main class with the cached jars
#
# Environment:
#   KAFKA_PORT (9092)  KAFKA_CONTROLLER_PORT (9093)
#   KAFKA_START_TIMEOUT (90 s)  KAFKA_STOP_TIMEOUT (30 s)
#   KAFKA_HEAP_OPTS ("-Xmx512m")  JAVA_HOME / JAVA (java 17+)
#   KAFKA_STATE_DIR (<repo>/.kafka)  MAVEN_OPTS (passed to mvn as usual)
#   KAFKA_SASL (unset: as the last start, else 0): 1 adds a SASL_PLAINTEXT listener on KAFKA_SASL_PORT (KAFKA_PORT+2)
#     with SCRAM-SHA-256 and SCRAM-SHA-512, and creates (or updates) the SCRAM user
#     KAFKA_SASL_USER (saga) with KAFKA_SASL_PASSWORD (saga-secret) for both. The
#     PLAINTEXT listener stays, for the broker itself and local tools.
set -euo pipefail

SCRIPT_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
REPO_ROOT="$(cd -- "$SCRIPT_DIR/.." && pwd -P)"
CONF_DIR="$SCRIPT_DIR/kafka"
POM="$CONF_DIR/pom.xml"
TEMPLATE="$CONF_DIR/server.properties.template"
BROKER_LOG4J="$CONF_DIR/log4j2.properties"
TOOLS_LOG4J="$CONF_DIR/log4j2-tools.properties"

STATE_DIR="${KAFKA_STATE_DIR:-$REPO_ROOT/.kafka}"
[[ "$STATE_DIR" == /* ]] || STATE_DIR="$PWD/$STATE_DIR"
LIB_DIR="$STATE_DIR/lib"
DATA_DIR="$STATE_DIR/data"
LOG_FILE="$STATE_DIR/broker.log"
PID_FILE="$STATE_DIR/broker.pid"
PROPS_FILE="$STATE_DIR/server.properties"
LOCK_FILE="$STATE_DIR/.lock"
MVN_LOG="$STATE_DIR/mvn.log"

HOST=127.0.0.1
PORT="${KAFKA_PORT:-9092}"
CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xmx512m}"
SASL="${KAFKA_SASL:-}"
if [[ -z "$SASL" ]]; then # keep the mode of the last start (a restart keeps its listeners)
  SASL=0
  grep -qs "SASL_PLAINTEXT://" "$PROPS_FILE" && SASL=1
fi
SASL_PORT="${KAFKA_SASL_PORT:-$((${KAFKA_PORT:-9092} + 2))}"
SASL_USER="${KAFKA_SASL_USER:-saga}"
SASL_PASSWORD="${KAFKA_SASL_PASSWORD:-saga-secret}"
DEP_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

log() { printf 'kafka.sh: %s\n' "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

show_log_tail() {
  if [[ -s "$LOG_FILE" ]]; then
    log "last lines of $LOG_FILE:"
    tail -n "${1:-40}" "$LOG_FILE" >&2 || true
  fi
}

check_settings() {
  local name value
  for name in PORT CONTROLLER_PORT SASL_PORT START_TIMEOUT STOP_TIMEOUT; do
    value="${!name}"
    [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a number, got '$value'"
  done
  ((PORT >= 1 && PORT <= 65535)) || die "KAFKA_PORT out of range: $PORT"
  ((CONTROLLER_PORT >= 1 && CONTROLLER_PORT <= 65535)) ||
    die "KAFKA_CONTROLLER_PORT out of range: $CONTROLLER_PORT"
  ((PORT != CONTROLLER_PORT)) || die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"
  [[ "$SASL" == 0 || "$SASL" == 1 ]] || die "KAFKA_SASL must be 0 or 1, got '$SASL'"
  if ((SASL)); then
    ((SASL_PORT != PORT && SASL_PORT != CONTROLLER_PORT)) ||
      die "KAFKA_SASL_PORT must differ from KAFKA_PORT and KAFKA_CONTROLLER_PORT"
    [[ "$SASL_USER" =~ ^[A-Za-z0-9._-]+$ ]] || die "KAFKA_SASL_USER: letters, digits, . _ - only"
    [[ "$SASL_PASSWORD" =~ ^[^],=[:space:]]+$ ]] || die "KAFKA_SASL_PASSWORD: no spaces , = ] please"
  fi
}

find_java() {
  if [[ -n "${JAVA:-}" ]]; then
    :
  elif [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then
    JAVA="$JAVA_HOME/bin/java"
  elif command -v java >/dev/null 2>&1; then
    JAVA="$(command -v java)"
  else
    die "java not found (Kafka 4 needs Java 17+; e.g. apt-get install openjdk-17-jre-headless)"
  fi
  local version major
  version="$("$JAVA" -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n 1)"
  major="${version%%.*}"
  [[ "$major" == 1 ]] && major="$(cut -d. -f2 <<<"$version")"
  if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 17)); then
    die "Kafka 4 needs Java 17+, but $JAVA is version $version"
  fi
}

# Short-lived JVM for the CLI tools (quiet logging on stderr, fast startup).
tool_cmd() {
  TOOL=("$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$TOOLS_LOG4J"
    -cp "$LIB_DIR/*")
}

# ---------------------------------------------------------------- jars

lib_stamp() { sha256sum "$POM" | cut -d' ' -f1; }

lib_ready() {
  [[ -f "$LIB_DIR/.stamp" && "$(cat "$LIB_DIR/.stamp")" == "$(lib_stamp)" ]]
}

ensure_lib() {
  lib_ready && return 0
  command -v mvn >/dev/null 2>&1 || die "mvn not found (apt-get install maven)"
  log "fetching Kafka jars from Maven Central into $LIB_DIR (cached after this) ..."
  local tmp="$STATE_DIR/lib.tmp.$$" attempt ok=0
  for attempt in 1 2 3; do
    rm -rf "$tmp"
    mkdir -p "$tmp"
    if mvn -q -B -Dstyle.color=never -f "$POM" \
      -Dmaven.wagon.http.retryHandler.count=3 \
      "$DEP_PLUGIN:copy-dependencies" \
      -DincludeScope=runtime -DoutputDirectory="$tmp" >"$MVN_LOG" 2>&1; then
      ok=1
      break
    fi
    log "mvn attempt $attempt failed (see $MVN_LOG)"
    sleep $((attempt * 2))
  done
  if ((!ok)); then
    rm -rf "$tmp"
    tail -n 30 "$MVN_LOG" >&2 || true
    die "could not fetch the Kafka jars with Maven"
  fi
  compgen -G "$tmp/kafka_2.13-*.jar" >/dev/null || die "Maven ran but kafka_2.13 jar is missing in $tmp"
  lib_stamp >"$tmp/.stamp"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  log "cached $(find "$LIB_DIR" -name '*.jar' | wc -l) jars in $LIB_DIR"
}

# ------------------------------------------------------------ config

render_props() {
  local text data_dir
  text="$(<"$TEMPLATE")"
  data_dir="${DATA_DIR//\\/\\\\}" # backslash is an escape in .properties
  text="${text//@PORT@/$PORT}"
  text="${text//@CONTROLLER_PORT@/$CONTROLLER_PORT}"
  text="${text//@DATA_DIR@/$data_dir}"
  local listener="" protocol="" config=""
  if ((SASL)); then
    listener=",SASL_PLAINTEXT://$HOST:$SASL_PORT"
    protocol=",SASL_PLAINTEXT:SASL_PLAINTEXT"
    local module="org.apache.kafka.common.security.scram.ScramLoginModule required;"
    config="# KAFKA_SASL=1: clients authenticate with SCRAM on the SASL_PLAINTEXT listener.
sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=$module
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=$module"
  fi
  text="${text//@SASL_LISTENER@/$listener}"
  text="${text//@SASL_PROTOCOL@/$protocol}"
  text="${text//@SASL_CONFIG@/$config}"
  printf '%s\n' "$text"
}

write_props() {
  render_props >"$PROPS_FILE.tmp"
  mv "$PROPS_FILE.tmp" "$PROPS_FILE"
}

ensure_formatted() {
  [[ -f "$DATA_DIR/meta.properties" ]] && return 0
  # No meta.properties: not a usable Kafka log dir (e.g. an interrupted format).
  rm -rf "$DATA_DIR"
  mkdir -p "$DATA_DIR"
  local cluster_id
  cluster_id="$("${TOOL[@]}" kafka.tools.StorageTool random-uuid | tr -d '[:space:]')"
  [[ -n "$cluster_id" ]] || die "StorageTool random-uuid printed nothing"
  log "formatting $DATA_DIR (cluster id $cluster_id)"
  if ! "${TOOL[@]}" kafka.tools.StorageTool format --standalone \
    -t "$cluster_id" -c "$PROPS_FILE" >"$STATE_DIR/format.log" 2>&1; then
    cat "$STATE_DIR/format.log" >&2
    rm -rf "$DATA_DIR"
    die "storage format failed"
  fi
}

# ---------------------------------------------------------- process

# True if $1 is a live broker process started with this state dir's config.
is_our_broker() {
  local pid="$1" cmdline
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *" kafka.Kafka $PROPS_FILE"* ]]
}

# Prints the broker pid; fails if no broker of this state dir runs.
broker_pid() {
  local pid=""
  [[ -f "$PID_FILE" ]] && pid="$(tr -dc '0-9' <"$PID_FILE" || true)"
  if [[ -n "$pid" ]] && is_our_broker "$pid"; then
    echo "$pid"
    return 0
  fi
  # Pid file missing or stale: look for the process itself.
  local file
  while IFS= read -r file; do
    pid="${file#/proc/}"
    pid="${pid%/cmdline}"
    if is_our_broker "$pid"; then
      echo "$pid" >"$PID_FILE"
      echo "$pid"
      return 0
    fi
  done < <(grep -lsF -- "$PROPS_FILE" /proc/[0-9]*/cmdline 2>/dev/null || true)
  return 1
}

port_open() {
  # shellcheck disable=SC2016 # $1/$2 expand in the child bash, on purpose
  timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$HOST" "$1" 2>/dev/null
}

# Readiness: Kafka's BrokerApiVersionsCommand sends a Metadata request to the
# bootstrap server, then ApiVersions to every broker it lists; succeed only if
# our broker (node 1) is in the answer.
probe() {
  local limit="${1:-20}" out
  ((limit < 5)) && limit=5
  port_open "$PORT" || return 1
  out="$(timeout "$limit" "${TOOL[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "$HOST:$PORT" 2>/dev/null)" || return 1
  [[ "$out" == *"$HOST:$PORT (id: 1 "* ]]
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  while :; do
    if ! is_our_broker "$pid"; then
      show_log_tail 60
      rm -f "$PID_FILE"
      die "broker process $pid exited during startup (log: $LOG_FILE)"
    fi
    if probe $((deadline - SECONDS)); then
      return 0
    fi
    if ((SECONDS >= deadline)); then
      show_log_tail 60
      return 1
    fi
    sleep 1
  done
}

launch() {
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  printf '=== kafka.sh start %s (port %s, controller %s) ===\n' \
    "$(date '+%F %T')" "$PORT" "$CONTROLLER_PORT" >"$LOG_FILE"
  local -a heap
  read -r -a heap <<<"$HEAP_OPTS"
  # setsid: own session, so the broker survives the caller's terminal/job
  # control; it execs in place here (not a group leader), so $! is java's pid.
  nohup setsid "$JAVA" "${heap[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
    -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true "-Dlog4j2.configurationFile=$BROKER_LOG4J" \
    "-Dkafka.logs.dir=$STATE_DIR" \
    -cp "$LIB_DIR/*" kafka.Kafka "$PROPS_FILE" >>"$LOG_FILE" 2>&1 </dev/null 9>&- &
  local pid=$!
  echo "$pid" >"$PID_FILE"
  # If setsid had to fork, find the real java process.
  sleep 0.2
  if ! is_our_broker "$pid"; then
    pid="$(broker_pid)" || {
      show_log_tail 60
      rm -f "$PID_FILE"
      die "broker failed to launch (log: $LOG_FILE)"
    }
  fi
  LAUNCHED_PID="$pid"
}

# Create or update the SCRAM user (idempotent), through the PLAINTEXT listener.
ensure_scram_user() {
  ((SASL)) || return 0
  local mechanism
  for mechanism in SCRAM-SHA-256 SCRAM-SHA-512; do # one per request, Kafka insists
    if ! "${TOOL[@]}" kafka.admin.ConfigCommand --bootstrap-server "$HOST:$PORT" --alter \
      --add-config "$mechanism=[password=$SASL_PASSWORD]" \
      --entity-type users --entity-name "$SASL_USER" >"$STATE_DIR/scram.log" 2>&1; then
      cat "$STATE_DIR/scram.log" >&2
      die "could not create the SCRAM user $SASL_USER ($mechanism)"
    fi
  done
  log "SCRAM user $SASL_USER ready on $HOST:$SASL_PORT (SASL_PLAINTEXT)"
}

do_stop() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PID_FILE"
    log "not running"
    return 0
  fi
  log "stopping broker (pid $pid) ..."
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while is_our_broker "$pid" && ((SECONDS < deadline)); do
    sleep 0.5
  done
  if is_our_broker "$pid"; then
    log "still running after ${STOP_TIMEOUT}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while is_our_broker "$pid" && ((SECONDS < deadline)); do
      sleep 0.2
    done
    is_our_broker "$pid" && die "could not kill broker pid $pid"
  fi
  rm -f "$PID_FILE"
  log "stopped"
}

do_start() {
  local started=$SECONDS pid
  ensure_lib
  tool_cmd
  if pid="$(broker_pid)"; then
    if [[ -f "$PROPS_FILE" && "$(render_props)" != "$(<"$PROPS_FILE")" ]]; then
      die "a broker (pid $pid) already runs with other settings (see $PROPS_FILE); run '$0 stop' first"
    fi
    if probe 20; then
      log "already running (pid $pid) on $HOST:$PORT"
      ensure_scram_user
      return 0
    fi
    log "broker pid $pid runs but does not answer yet; waiting up to ${START_TIMEOUT}s"
    wait_ready "$pid" || die "broker pid $pid did not answer on $HOST:$PORT within ${START_TIMEOUT}s"
    log "up on $HOST:$PORT (pid $pid)"
    ensure_scram_user
    return 0
  fi
  rm -f "$PID_FILE"
  local p ports=("$PORT" "$CONTROLLER_PORT")
  ((SASL)) && ports+=("$SASL_PORT")
  for p in "${ports[@]}"; do
    if port_open "$p"; then
      die "port $HOST:$p is already in use by another process (not this checkout's broker); set KAFKA_PORT / KAFKA_CONTROLLER_PORT"
    fi
  done
  write_props
  # Changing KAFKA_PORT / KAFKA_CONTROLLER_PORT later is fine: the lone
  # voter re-registers its new controller endpoint on startup.
  ensure_formatted
  launch
  pid="$LAUNCHED_PID"
  log "broker pid $pid starting on $HOST:$PORT (log: $LOG_FILE) ..."
  if ! wait_ready "$pid"; then
    log "ERROR: broker did not answer a metadata request on $HOST:$PORT within ${START_TIMEOUT}s; stopping it"
    do_stop || true
    exit 1
  fi
  log "up on $HOST:$PORT (pid $pid) after $((SECONDS - started))s"
  ensure_scram_user
}

do_status() {
  local pid
  if ! pid="$(broker_pid)"; then
    echo "kafka: down"
    return 3
  fi
  if lib_ready; then
    tool_cmd
    if probe 15; then
      echo "kafka: up (pid $pid, bootstrap $HOST:$PORT)"
      return 0
    fi
  fi
  echo "kafka: running (pid $pid) but not answering on $HOST:$PORT"
  return 1
}

with_lock() {
  mkdir -p "$STATE_DIR"
  exec 9>"$LOCK_FILE"
  if ! flock -w $((START_TIMEOUT + STOP_TIMEOUT + 900)) 9; then
    die "timed out waiting for another kafka.sh run (lock $LOCK_FILE)"
  fi
  "$@"
  exec 9>&-
}

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
  start | stop | restart | status | reset | fetch | topics | run-class) ;;
  bootstrap)
    check_settings
    echo "$HOST:$PORT"
    return 0
    ;;
  sasl-bootstrap)
    check_settings
    echo "$HOST:$SASL_PORT"
    return 0
    ;;
  -h | --help | help)
    usage
    return 0
    ;;
  *)
    usage >&2
    return 2
    ;;
  esac
  check_settings
  find_java
  mkdir -p "$STATE_DIR"
  case "$cmd" in
  start) with_lock do_start ;;
  stop) with_lock do_stop ;;
  restart)
    with_lock do_stop
    with_lock do_start
    ;;
  status) do_status ;;
  reset)
    with_lock do_stop
    rm -rf "$DATA_DIR"
    log "deleted $DATA_DIR"
    ;;
  fetch) with_lock ensure_lib ;;
  topics)
    with_lock ensure_lib
    tool_cmd
    exec "${TOOL[@]}" org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$PORT" "$@"
    ;;
  run-class)
    [[ $# -ge 1 ]] || die "usage: $0 run-class CLASS [ARGS...]"
    with_lock ensure_lib
    tool_cmd
    exec "${TOOL[@]}" "$@"
    ;;
  esac
}

main "$@"
