#!/usr/bin/env bash
# The cluster demo, on one machine: two ingestd (node-a, node-b) and two hlsd
# sharing one PostgreSQL catalog (database fleet_demo on the local server)
# and one S3 bucket (moto's S3-compatible server, in memory), HAProxy in front
# of both running a copy of deploy/haproxy.cfg, and simulated dashcams that
# connect through the balancer. Prints the URLs; Ctrl-C stops it all.
#   DEMO_DIR=./cluster-data HTTP_PORT=8080 DEVICES=4 scripts/cluster-demo.sh
# INPUT=<file> replays another Annex-B H.264 file or a JT/T 1078 capture.
# Each run starts from an empty catalog and bucket (moto keeps nothing, so a
# catalog kept from the last run would list recordings that are gone).
# Logs: $DEMO_DIR/*.log. docs/cluster.md explains what runs here.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/npm-deps.sh
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
if ! command -v haproxy >/dev/null 2>&1; then
  echo "installing: haproxy"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends haproxy
fi
MOTO_SERVER=$(scripts/install-moto.sh)
cargo build --release -p ingestd -p hlsd -p benches --bins

DEMO_DIR=${DEMO_DIR:-./cluster-data}
HTTP_PORT=${HTTP_PORT:-8080}
DEVICES=${DEVICES:-4}
INPUT=${INPUT:-fixtures/high_b2.h264}
# Where cargo put the binaries (CARGO_TARGET_DIR when set).
BIN=${CARGO_TARGET_DIR:-target}/release

# Ports. The balancer takes the devices' usual ones; each node gets its own
# range, as separate machines would each have the defaults.
BAL_808=6808 BAL_1078=6809 STATS_PORT=8404
A_808=16808 A_1078=16809 A_RAW=16810 A_HTTP=16811
B_808=26808 B_1078=26809 B_RAW=26810 B_HTTP=26811
HLSD_A=18080 HLSD_B=28080
BUCKET=fleet-demo
STORAGE_URL="s3://$BUCKET/live"
DB_NAME=fleet_demo
DB_URL="postgres://postgres@127.0.0.1:5432/$DB_NAME"

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }
# `wait_port NAME HOST PORT [LOG]`: until something listens, for up to 30 s.
wait_port() {
  for _ in $(seq 1 150); do
    port_open "$2" "$3" && return 0
    sleep 0.2
  done
  echo "error: $1 is not listening on $2:$3 after 30 s" >&2
  [ -z "${4:-}" ] || tail -20 "$4" >&2
  return 1
}
# `http_ok PORT PATH`: a GET on 127.0.0.1 answers 200 (no curl needed).
http_ok() {
  (
    exec 3<>"/dev/tcp/127.0.0.1/$1"
    printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
    IFS= read -r status <&3
    [[ $status == *" 200 "* ]]
  ) 2>/dev/null
}

for p in $BAL_808 $BAL_1078 $STATS_PORT $HTTP_PORT $A_808 $A_1078 $A_RAW $A_HTTP \
         $B_808 $B_1078 $B_RAW $B_HTTP $HLSD_A $HLSD_B; do
  if port_open 127.0.0.1 "$p"; then
    echo "error: port $p is in use (another demo still running?)" >&2
    exit 1
  fi
done

# The catalog: the local PostgreSQL, trust auth for postgres on 127.0.0.1
# (as the catalog tests use it).
if ! port_open 127.0.0.1 5432; then
  [ -d /etc/postgresql ] || { echo "error: PostgreSQL is not installed" >&2; exit 1; }
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  wait_port PostgreSQL 127.0.0.1 5432
fi
PGOPTIONS="-c client_min_messages=warning" dropdb -h 127.0.0.1 -U postgres --if-exists --force "$DB_NAME"
createdb -h 127.0.0.1 -U postgres "$DB_NAME"

# Per-node state of the last run (upload spills would otherwise be sent to
# this run's empty bucket).
mkdir -p "$DEMO_DIR"
rm -rf "${DEMO_DIR:?}"/node-a "${DEMO_DIR:?}"/node-b "${DEMO_DIR:?}"/hlsd-a "${DEMO_DIR:?}"/hlsd-b
mkdir -p "$DEMO_DIR"/node-a "$DEMO_DIR"/node-b "$DEMO_DIR"/hlsd-a "$DEMO_DIR"/hlsd-b

pids=()
stores=()
declare -A names=()
# `started NAME`: tracks the background process just started.
started() {
  pids+=($!)
  names[$!]=$1
}
cleanup() {
  trap - EXIT INT TERM
  # Everything but the store at once; the store once the ingestd have
  # finalized their playlists and drained their uploads into it.
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  kill -TERM "${stores[@]}" 2>/dev/null || true
  wait "${stores[@]}" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The object store: moto's S3 server, and the bucket made with a signed
# CreateBucket (boto3 comes with moto, in the same virtualenv).
MOTO_PORT=$("$(dirname "$MOTO_SERVER")/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >"$DEMO_DIR/moto.log" 2>&1 &
stores+=($!)
store_env=(
  AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT"
  AWS_ALLOW_HTTP=true
  AWS_REGION=us-east-1
  AWS_ACCESS_KEY_ID=fleet-demo
  AWS_SECRET_ACCESS_KEY=fleet-demo-secret
)
wait_port moto 127.0.0.1 "$MOTO_PORT" "$DEMO_DIR/moto.log"
env "${store_env[@]}" "$(dirname "$MOTO_SERVER")/python" - "$BUCKET" <<'PY'
import os, sys
import boto3
boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket=sys.argv[1])
PY

# ingestd: `start_ingestd ID 808 1078 RAW HTTP`. Same catalog and bucket;
# own data dir (its upload spill); registered in the catalog's node registry
# under ID with the control URL hlsd reaches it at. Devices are told to send
# media to 127.0.0.1 and this node's own JT/T 1078 port (0x9101/0x9201).
start_ingestd() {
  env "${store_env[@]}" "$BIN"/ingestd --data-dir "$DEMO_DIR/$1" \
    --database-url "$DB_URL" --storage-url "$STORAGE_URL" \
    --instance-id "$1" --control-url "http://127.0.0.1:$5" --advertise-ip 127.0.0.1 \
    --jt808-listen "127.0.0.1:$2" --jt1078-listen "127.0.0.1:$3" \
    --raw-listen "127.0.0.1:$4" --http-listen "127.0.0.1:$5" \
    --incident-channels 1,2 >"$DEMO_DIR/$1.log" 2>&1 &
  started "$1"
}
start_ingestd node-a $A_808 $A_1078 $A_RAW $A_HTTP
# One after the other: both apply the catalog's migrations at start.
wait_port node-a 127.0.0.1 $A_808 "$DEMO_DIR/node-a.log"
start_ingestd node-b $B_808 $B_1078 $B_RAW $B_HTTP
wait_port node-b 127.0.0.1 $B_808 "$DEMO_DIR/node-b.log"

# hlsd: `start_hlsd ID PORT`. Reads media from the bucket, sends a device's
# commands to the node the registry says holds it (node-a when none does).
# The demo opens viewing and the API to anyone who reaches the port (no
# login); a deployment makes accounts instead (README, "Accounts and access").
start_hlsd() {
  env "${store_env[@]}" "$BIN"/hlsd --data-dir "$DEMO_DIR/$1" \
    --database-url "$DB_URL" --storage-url "$STORAGE_URL" \
    --listen "127.0.0.1:$2" --instance-id "$1" \
    --ingestd-url "http://127.0.0.1:$A_HTTP" --allow-anonymous >"$DEMO_DIR/$1.log" 2>&1 &
  started "$1"
}
start_hlsd hlsd-a $HLSD_A
start_hlsd hlsd-b $HLSD_B
wait_port hlsd-a 127.0.0.1 $HLSD_A "$DEMO_DIR/hlsd-a.log"
wait_port hlsd-b 127.0.0.1 $HLSD_B "$DEMO_DIR/hlsd-b.log"

# The balancer: deploy/haproxy.cfg with this machine's ports in place of the
# placeholder addresses, devices' ports on loopback, and without the
# user/chroot lines of a system install (it runs as whoever runs the demo).
# It picks a device's node by a hash of the device's IP address, and every
# device here comes from the same one. So the devices' ports listen on
# IPv6's loopback too, where IPv6 is on: devices connecting from ::1 hash
# elsewhere than those from 127.0.0.1 (to node-a and node-b respectively, with
# HAProxy 2.6), and both nodes hold devices.
cfg="$DEMO_DIR/haproxy.cfg"
v6_808="" v6_1078=""
if "$(dirname "$MOTO_SERVER")/python" -c 'import socket; socket.socket(socket.AF_INET6).bind(("::1", 0))' 2>/dev/null; then
  v6_808="\\n    bind [::1]:$BAL_808" v6_1078="\\n    bind [::1]:$BAL_1078"
fi
sed -e "s/10\.0\.0\.11:6808/127.0.0.1:$A_808/; s/10\.0\.0\.11:6809/127.0.0.1:$A_1078/" \
    -e "s/10\.0\.0\.12:6808/127.0.0.1:$B_808/; s/10\.0\.0\.12:6809/127.0.0.1:$B_1078/" \
    -e "s/10\.0\.0\.21:8080/127.0.0.1:$HLSD_A/; s/10\.0\.0\.22:8080/127.0.0.1:$HLSD_B/" \
    -e "s/^\( *bind \):6808$/\1127.0.0.1:$BAL_808$v6_808/; s/^\( *bind \):6809$/\1127.0.0.1:$BAL_1078$v6_1078/" \
    -e "s/^\( *bind \):8080$/\1:$HTTP_PORT/; s/^\( *bind 127\.0\.0\.1:\)8404$/\1$STATS_PORT/" \
    -e "s/^\( *maxconn \)[0-9]*$/\14096/" \
    -e '/^ *\(user\|group\|chroot\) /d' \
    deploy/haproxy.cfg >"$cfg"
if grep -v '^ *#' "$cfg" | grep -q '10\.0\.0\.'; then
  echo "error: $cfg still names a placeholder address (deploy/haproxy.cfg changed?):" >&2
  grep -n '^ *[^ #].*10\.0\.0\.' "$cfg" >&2
  exit 1
fi
haproxy -c -q -f "$cfg"
haproxy -db -f "$cfg" >"$DEMO_DIR/haproxy.log" 2>&1 &
started haproxy
wait_port haproxy 127.0.0.1 $BAL_808 "$DEMO_DIR/haproxy.log"
wait_port haproxy 127.0.0.1 "$HTTP_PORT" "$DEMO_DIR/haproxy.log"

# The simulated dashcams, through the balancer's ports only (as demo.sh's:
# SD card recordings on channels 1 and 2, an overspeed alarm 20 s in, frames
# stamped with the wall clock). `start_devices FIRST COUNT HOST LOG`: SIMs
# 013800000000 + FIRST onwards. Half of them from ::1 when IPv6 is on (see
# the balancer above); without it, all land on one node and the other
# stands by.
start_devices() {
  [ "$2" -gt 0 ] || return 0
  "$BIN"/devsim --jt808 "$3:$BAL_808" --jt1078 "$3:$BAL_1078" \
    --devices "$2" --sim-base $((13800000000 + $1)) --input "$INPUT" --loop \
    --position-interval 2 --sd-channels 1,2 --alarm-at 20 --wall-clock >"$DEMO_DIR/$4" 2>&1 &
  started "devsim ($3)"
}
if [ -n "$v6_808" ]; then
  v4_devices=$(((DEVICES + 1) / 2))
  start_devices 0 "$v4_devices" 127.0.0.1 devsim.log
  start_devices "$v4_devices" $((DEVICES - v4_devices)) "[::1]" devsim-v6.log
else
  start_devices 0 "$DEVICES" 127.0.0.1 devsim.log
fi

stream="013800000000_1"
for _ in $(seq 1 150); do
  http_ok "$HTTP_PORT" "/live/$stream/index.m3u8" && break
  sleep 0.2
done
http_ok "$HTTP_PORT" "/live/$stream/index.m3u8" ||
  echo "warning: $stream is not playable through the balancer after 30 s; see $DEMO_DIR/*.log" >&2
holders=$(psql -h 127.0.0.1 -U postgres -d "$DB_NAME" -At -F ' ' \
  -c "SELECT node, count(*) FROM device_nodes GROUP BY node ORDER BY node" 2>/dev/null \
  | awk '{printf "%s%s holds %s", sep, $1, $2; sep = ", "}')
cat <<MSG

  Cluster demo running (logs and data in $DEMO_DIR; catalog $DB_URL;
  bucket $STORAGE_URL on moto at 127.0.0.1:$MOTO_PORT).
  Anonymous access is ON (hlsd --allow-anonymous): no login, anyone who
  reaches port $HTTP_PORT can watch and start/stop video. Not for deployment.
  Through the balancer (HAProxy, $cfg):
    Web page:       http://127.0.0.1:$HTTP_PORT/
    Live playlist:  http://127.0.0.1:$HTTP_PORT/live/$stream/index.m3u8
    API:            http://127.0.0.1:$HTTP_PORT/api/streams
    Devices:        JT/T 808 127.0.0.1:$BAL_808, JT/T 1078 127.0.0.1:$BAL_1078 ($DEVICES simulated)
    Balancer state: http://127.0.0.1:$STATS_PORT/
  Each hlsd directly: http://127.0.0.1:$HLSD_A/ (hlsd-a), http://127.0.0.1:$HLSD_B/ (hlsd-b)
  ingestd metrics:    http://127.0.0.1:$A_HTTP/metrics (node-a), http://127.0.0.1:$B_HTTP/metrics (node-b)
  Devices by node:    ${holders:-(none registered yet)}
  Processes:          $(for p in "${pids[@]}"; do printf '%s %s, ' "${names[$p]}" "$p"; done | sed 's/, $//')
  Ctrl-C stops everything.

MSG
# Runs until Ctrl-C. A process that ends is reported and the rest go on:
# stopping a node is how to watch a failover (docs/cluster.md).
running=("${pids[@]}")
while [ ${#running[@]} -gt 0 ]; do
  ended="" status=0
  wait -n -p ended "${running[@]}" || status=$?
  [ -n "$ended" ] || continue
  echo "  ${names[$ended]} (pid $ended) ended with status $status; log in $DEMO_DIR" >&2
  left=()
  for p in "${running[@]}"; do
    [ "$p" = "$ended" ] || left+=("$p")
  done
  running=("${left[@]}")
done
