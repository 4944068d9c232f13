#!/usr/bin/env bash
# Installs what the test cluster's node needs from Debian, once: containerd and runc (the
# container runtime), the CNI plugins (bridge, host-local, loopback), iptables and conntrack
# (kube-proxy). No service is started (there is no systemd; `kube-node cluster` runs containerd
# itself, with its own configuration). Needs root, as the cluster does.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables conntrack)
missing=()
command -v containerd >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
(( ${#missing[@]} == 0 )) && exit 0
if (( EUID != 0 )); then
  echo "ensure-node-packages: need root to install ${missing[*]} (sudo $0)" >&2
  exit 1
fi
echo "ensure-node-packages: installing ${packages[*]} from Debian" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
# Package scripts must not start services on this machine: the cluster starts its own.
policy=/usr/sbin/policy-rc.d
created=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && created=1
fi
trap '(( created )) && rm -f "$policy"' EXIT
apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2
