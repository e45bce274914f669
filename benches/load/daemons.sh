# Sourced by the benchmark scripts that drive the real daemons: builds the release binaries,
# starts ingestd (ports 16808-16811) and hlsd (18080) on a fresh data dir, and stops them and
# removes the dir when the script exits. Sets BIN, DIR, INGESTD and HLSD (pids); `pids` holds
# every process to stop (add yours). Extra arguments: INGESTD_ARGS and HLSD_ARGS (arrays).
cargo build --release -q -p ingestd --bin ingestd
cargo build --release -q -p hlsd --bin hlsd
cargo build --release -q -p benches --bin devsim
BIN=${CARGO_TARGET_DIR:-target}/release
DIR=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
"$BIN"/ingestd --data-dir "$DIR" --jt808-listen 127.0.0.1:16808 --jt1078-listen 127.0.0.1:16809 \
  --raw-listen 127.0.0.1:16810 --http-listen 127.0.0.1:16811 ${INGESTD_ARGS[@]+"${INGESTD_ARGS[@]}"} \
  >"$DIR/ingestd.log" 2>&1 &
INGESTD=$!
pids+=($INGESTD)
"$BIN"/hlsd --data-dir "$DIR" --listen 127.0.0.1:18080 --ingestd-url http://127.0.0.1:16811 --allow-anonymous \
  "${HLSD_ARGS[@]}" >"$DIR/hlsd.log" 2>&1 &
HLSD=$!
pids+=($HLSD)
sleep 1
