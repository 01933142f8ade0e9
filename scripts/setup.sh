#!/usr/bin/env bash
# Installs everything Wukong needs on a Debian 12 machine, and nothing twice:
# system packages (apt), kernel headers for BCC, the project's virtualenv and the
# real kube-apiserver (built once from the Go module proxy, then cached).
# Safe to rerun; each step checks before it acts.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: cannot install system packages"
  SUDO="sudo"
fi

# --- system packages ---------------------------------------------------------
# python3-venv: the venv is made from Debian's interpreter, because BCC's Python
#   bindings (python3-bpfcc) only import there and it carries USDT probes.
# prometheus: brings the real `prometheus` and `promtool` for rules and dashboards.
# linux-headers-amd64: BCC compiles its programs against kernel headers.
# containerd, runc, containernetworking-plugins, iptables, conntrack, iproute2:
#   the dev node (`wukong dev up --node`, tests/node): its container runtime,
#   CNI bridge plugin, kube-proxy's rules and the node's network namespace.
# mmdebstrap: the Debian root filesystem the operator and agent images start from.
APT_PACKAGES=(python3-venv python3-bpfcc bpftrace prometheus linux-headers-amd64 ca-certificates
  containerd runc containernetworking-plugins iptables conntrack iproute2 mmdebstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- kernel headers for BCC ----------------------------------------------------
# The running kernel ships no headers; BCC looks for them under
# /lib/modules/$(uname -r)/{build,source}. Point those at Debian's headers.
modules_dir="/lib/modules/$(uname -r)"
if [ ! -e "$modules_dir/build/include" ]; then
  arch_headers=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -1)
  common_headers=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  if [ -n "$arch_headers" ] && [ -n "$common_headers" ]; then
    say "linking kernel headers into $modules_dir"
    $SUDO mkdir -p "$modules_dir"
    $SUDO ln -sfn "$arch_headers" "$modules_dir/build"
    $SUDO ln -sfn "$common_headers" "$modules_dir/source"
  else
    say "warning: no kernel headers under /usr/src; eBPF features will be unavailable"
  fi
fi

# --- tracefs and debugfs for BCC ------------------------------------------------
# BCC registers and removes uprobes/USDT probes through tracefs; this VM boots
# without it mounted. Only as root (the eBPF tests and the agent need root anyway).
if [ "$(id -u)" -eq 0 ]; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
  mountpoint -q /sys/kernel/debug || mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
fi

# --- Python virtualenv -----------------------------------------------------------
venv=.venv
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv from /usr/bin/python3 (with system site-packages for BCC)"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.wukong-deps"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python dependencies into $venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  "$venv/bin/python" -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# --- Go: the real kube-apiserver, kubectl and the node's components ---------------
# kubectl, kubelet, kube-proxy, kube-scheduler and kube-controller-manager are
# one program (wukong/devcluster/kubenode), compiled once with what they share.
command -v go >/dev/null || die "Go is not on PATH; it is needed to build etcd and kube-apiserver (Go >= 1.26)"
"$venv/bin/wukong" dev build --node
