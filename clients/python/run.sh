#!/usr/bin/env bash
# A Python client generated from proto/ with grpcio-tools, run against `corral dev`:
# lists pools, submits a job, watches it finish and reads its logs (smoke.py). It keeps
# the published API usable from a standard gRPC toolchain, not only from corral's own.
#
# Run from anywhere after `cargo build -p corral` (or `cargo test --workspace`): it uses
# ${CARGO_TARGET_DIR:-target}/debug/corral. As root on Debian it installs python3-grpcio
# and python3-grpc-tools when missing. The stubs and the cluster's data go to a temporary
# directory that is removed at exit; `corral dev` is always stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."

corral="${CARGO_TARGET_DIR:-target}/debug/corral"
# corral dev prints what to use; a caller's own cluster settings must not leak in.
unset CORRAL_ADDR CORRAL_TOKEN CORRAL_TOKEN_FILE CORRAL_CA_FILE CORRAL_CERT_FILE CORRAL_KEY_FILE
if [ ! -x "$corral" ]; then
  echo "run.sh: $corral not found; build it first: cargo build -p corral" >&2
  exit 1
fi

# A Python that has grpc and grpc_tools: $PYTHON, python3 on PATH, or Debian's.
has_grpc() { "$1" -c 'import grpc, grpc_tools.protoc' >/dev/null 2>&1; }
find_python() {
  local candidate
  for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 && has_grpc "$candidate"; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
if ! python="$(find_python)"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing python3-grpcio and python3-grpc-tools"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq python3-grpcio python3-grpc-tools >/dev/null
  fi
  if ! python="$(find_python)"; then
    echo "run.sh: no python3 with grpc and grpc_tools; install python3-grpcio and" \
      "python3-grpc-tools (Debian) or 'pip install grpcio grpcio-tools'" >&2
    exit 1
  fi
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/corral-pyclient.XXXXXX")"
dev_pid=""
stop_dev() {
  if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
    kill -TERM "$dev_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$dev_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$dev_pid" 2>/dev/null || true
    wait "$dev_pid" 2>/dev/null || true
  fi
  dev_pid=""
}
cleanup() {
  local status=$?
  stop_dev
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== generating Python stubs from proto/ ($("$python" -m grpc_tools.protoc --version))"
mkdir "$work/stubs"
"$python" -m grpc_tools.protoc -I proto --python_out="$work/stubs" --grpc_python_out="$work/stubs" proto/*.proto

# A base port whose next two are free too (corral dev's replicas take port, port+1, port+2).
free_port() {
  "$python" - <<'EOF'
import random, socket
for _ in range(200):
    base = random.randint(20000, 59000)
    sockets = []
    try:
        for port in (base, base + 1, base + 2):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(s)
            s.bind(("127.0.0.1", port))
        print(base)
        break
    except OSError:
        pass
    finally:
        for s in sockets:
            s.close()
else:
    raise SystemExit("no three consecutive free ports")
EOF
}

# Start corral dev and wait (60 s at most) for it to print the CA and the demo token;
# a start that loses its port to another process is tried again on another port.
ca_file="" token="" addr=""
for attempt in 1 2 3; do
  port="$(free_port)"
  rm -rf "$work/data"
  log="$work/dev-$attempt.log"
  echo "== starting corral dev on 127.0.0.1:$port (attempt $attempt)"
  "$corral" dev --port "$port" --data-dir "$work/data" >"$log" 2>&1 &
  dev_pid=$!
  for _ in $(seq 1 600); do
    if grep -q '^corral dev is ready' "$log"; then
      break
    fi
    kill -0 "$dev_pid" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q '^corral dev is ready' "$log"; then
    addr="$(sed -n 's/^ *export CORRAL_ADDR=\([^ ]*\).*/\1/p' "$log" | head -n 1)"
    ca_file="$(sed -n 's/^ *export CORRAL_CA_FILE=\([^ ]*\).*/\1/p' "$log" | head -n 1)"
    token="$(sed -n 's/^ *export CORRAL_TOKEN=\([^ ]*\).*/\1/p' "$log" | head -n 1)"
    break
  fi
  echo "corral dev did not become ready; its output:" >&2
  tail -n 30 "$log" >&2
  stop_dev
done
if [ -z "$addr" ] || [ -z "$ca_file" ] || [ -z "$token" ]; then
  echo "run.sh: could not start corral dev or read its address, CA and demo token" >&2
  exit 1
fi

echo "== python client against $addr (CA $ca_file)"
status=0
CORRAL_TOKEN="$token" timeout 120 "$python" -u clients/python/smoke.py \
  --stubs "$work/stubs" --addr "$addr" --ca-file "$ca_file" || status=$?
if [ "$status" != 0 ]; then
  echo "== the last lines corral dev printed" >&2
  tail -n 40 "$log" >&2
fi
exit "$status"
