# Sourced by the load A/B scripts: the load harness's Python environment (PY) and the
# 720p25 2.7 Mbit/s input of run.sh (IN), made once.
cargo build --release -q -p ingestd --bin ingestd
cargo build --release -q -p benches --bin devsim
if [ ! -x target/loadenv/bin/python ]; then
  python3 -m venv target/loadenv
  target/loadenv/bin/pip install -q -r benches/load/requirements.txt
fi
PY=target/loadenv/bin/python
IN=target/bench-inputs/720p25_2700k_10s.h264
mkdir -p "$(dirname "$IN")"
[ -s "$IN" ] || ffmpeg -nostdin -v error -y -f lavfi -i testsrc2=size=1280x720:rate=25:duration=10 \
  -pix_fmt yuv420p -c:v libx264 -preset veryfast -profile:v main -bf 0 -g 50 -keyint_min 50 \
  -sc_threshold 0 -b:v 2700k -maxrate 2700k -bufsize 5400k -f h264 "$IN"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# The machine and build a result set came from, for OUT_DIR/machine.txt.
machine_lines() {
  echo "date: $(date -u +%FT%TZ)"
  echo "cores: $(nproc)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
  echo "memory: $(free -g | awk '/Mem:/{print $2}') GiB"
  local dirty
  dirty=$(git status --porcelain --untracked-files=no | wc -l)
  echo "commit: $(git rev-parse --short HEAD)$([ "$dirty" = 0 ] || echo " + $dirty modified files")"
}

# An empty DIR/results.jsonl (a non-empty one is kept aside with the time); prints its path.
fresh_results() {
  local res="$1/results.jsonl"
  [ ! -s "$res" ] || mv "$res" "$res.$(date -u +%Y%m%dT%H%M%SZ)"
  : > "$res"
  echo "$res"
}
