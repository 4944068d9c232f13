#!/usr/bin/env bash
# Builds the test cluster's binaries from Go modules into $OUT (default: <repo>/target/kube-harness):
#   kube-node  one binary for every Kubernetes component (k8s.io/kubernetes v1.34) and CoreDNS:
#              `kube-node cluster` runs a whole single-node cluster, `kube-node apiserver` the API
#              server and etcd alone (see cmd/kube-node/main.go)
#   kubectl    the upstream kubectl
#   pause      the Pod sandbox binary (static; `make images` packs it into the pause image)
# One `go build` shares the compile of every package between them. Go's module and build caches
# make a rebuild after the first one mostly a link; nothing is built when the sources match the
# last build's stamp.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${OUT:-$here/../../target/kube-harness}"
version=v1.34.2
bins=(kube-node kubectl pause)
mkdir -p "$out"
# One build at a time (CI starts one early; test binaries may start another): the second
# waits, then finds the stamp current.
exec 9>"$out/.build-sh.lock"
flock 9
stamp="$(cat "$here/go.mod" "$here/go.sum" "$here"/cmd/*/*.go "$0" | sha256sum | cut -d' ' -f1)"
current=1
for b in "${bins[@]}"; do [[ -x "$out/$b" ]] || current=0; done
if (( current )) && [[ "$(cat "$out/stamp" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$version -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34 -X k8s.io/client-go/pkg/version.gitVersion=$version"
cd "$here"
echo "kube-harness: building kube-node (Kubernetes $version, CoreDNS), kubectl and pause from Go modules (the first build takes minutes)" >&2
start=$SECONDS
go build -trimpath -ldflags "$ldflags" -o "$out/" ./cmd/kube-node ./cmd/kubectl ./cmd/pause
echo "kube-harness: built in $((SECONDS - start)) s" >&2
echo "$stamp" > "$out/stamp"
# Go's build and module caches are ~4 GB after this build. Where disk is short (CI sets the
# threshold), drop them: the binaries above are what the tests use; a rebuild only costs time.
if [[ -n "${KUBE_HARNESS_TRIM_BELOW_GB:-}" ]]; then
  free_gb=$(df -Pk "$out" | awk 'NR==2 {print int($4 / 1048576)}')
  if (( free_gb < KUBE_HARNESS_TRIM_BELOW_GB )); then
    echo "kube-harness: ${free_gb} GB free (< ${KUBE_HARNESS_TRIM_BELOW_GB}): dropping Go's caches $(go env GOCACHE) $(go env GOMODCACHE)" >&2
    go clean -cache -modcache
  fi
fi
