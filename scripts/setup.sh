#!/usr/bin/env bash
# Installs everything Wukong needs on a Debian 12 machine, and nothing twice:
# Go's version checked first, system packages (apt), kernel headers for BCC, the
# project's virtualenv with `kubectl` and `helm` in it, and the real etcd and
# kube-apiserver (built once from the Go module proxy, then cached). Everything
# else (the dev node's programs, helm, Prometheus 3) is built the first time
# something uses it. Safe to rerun; each step checks before it acts and says
# what it did.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# --- Go, first: every build below needs it -------------------------------------
GO_MIN=1.26
command -v go >/dev/null || die "Go is not on PATH; install Go >= $GO_MIN (it builds etcd and kube-apiserver)"
go_version=$(go env GOVERSION)   # go1.26.8
go_version=${go_version#go}
if [ "$(printf '%s\n%s\n' "$GO_MIN" "$go_version" | sort -V | head -1)" != "$GO_MIN" ]; then
  die "Go $go_version is too old; Wukong's builds need Go >= $GO_MIN"
fi
say "Go $go_version (>= $GO_MIN)"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || die "not root and no sudo: cannot install system packages"
  SUDO="sudo"
fi

# --- system packages ---------------------------------------------------------
# python3-venv: the venv is made from Debian's interpreter, because BCC's Python
#   bindings (python3-bpfcc) only import there and it carries USDT probes.
# prometheus: brings the real `prometheus` and `promtool` for rules and dashboards.
# linux-headers-<arch>: BCC compiles its programs against kernel headers.
# containerd, runc, containernetworking-plugins, iptables, conntrack, iproute2:
#   the dev node (`wukong dev up --node`, tests/node): its container runtime,
#   CNI bridge plugin, kube-proxy's rules and the node's network namespace.
# mmdebstrap: the Debian root filesystem the operator and agent images start from.
arch=$(dpkg --print-architecture)   # amd64, arm64: Debian's kernel flavours are named so
APT_PACKAGES=(python3-venv python3-bpfcc bpftrace prometheus "linux-headers-$arch" ca-certificates
  containerd runc containernetworking-plugins iptables conntrack iproute2 mmdebstrap)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  say "installing system packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  say "system packages: all ${#APT_PACKAGES[@]} installed"
fi

# --- kernel headers for BCC ----------------------------------------------------
# The running kernel ships no headers; BCC looks for them under
# /lib/modules/$(uname -r)/{build,source}. Point those at Debian's headers.
modules_dir="/lib/modules/$(uname -r)"
if [ ! -e "$modules_dir/build/include" ]; then
  arch_headers=$(ls -d /usr/src/linux-headers-*-"$arch" 2>/dev/null | sort -V | tail -1)
  common_headers=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -1)
  if [ -n "$arch_headers" ] && [ -n "$common_headers" ]; then
    say "linking kernel headers $arch_headers into $modules_dir"
    $SUDO mkdir -p "$modules_dir"
    $SUDO ln -sfn "$arch_headers" "$modules_dir/build"
    $SUDO ln -sfn "$common_headers" "$modules_dir/source"
  else
    say "warning: no kernel headers for $arch under /usr/src; eBPF features will be unavailable"
  fi
else
  say "kernel headers: $modules_dir/build is there"
fi

# --- tracefs and debugfs for BCC ------------------------------------------------
# BCC registers and removes uprobes/USDT probes through tracefs; this VM boots
# without it mounted. Only as root (the eBPF tests and the agent need root anyway).
if [ "$(id -u)" -eq 0 ]; then
  for fs in tracing:tracefs debug:debugfs; do
    dir=/sys/kernel/${fs%%:*}
    if ! mountpoint -q "$dir"; then
      say "mounting ${fs#*:} on $dir"
      mount -t "${fs#*:}" "${fs#*:}" "$dir" 2>/dev/null || say "warning: cannot mount $dir"
    fi
  done
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
  say "installing Python dependencies into $venv (pip install -e '.[dev]')"
  "$venv/bin/python" -m pip install -q --progress-bar off --upgrade pip
  "$venv/bin/python" -m pip install --progress-bar off -e '.[dev]' \
    > >(grep --line-buffered -E '^(Collecting|Successfully installed)' >&2)
  echo "$want" > "$stamp"
else
  say "Python dependencies: up to date in $venv"
fi
# `kubectl` and `helm` for README's commands (with .venv/bin on PATH): scripts that
# build each at its pinned release the first time it is run.
say "kubectl and helm in $venv/bin (each built the first time it runs; put $venv/bin on PATH)"
"$venv/bin/python" -P -m wukong.devcluster.tool --install "$venv/bin"

# --- Go: the real etcd and kube-apiserver -------------------------------------------
# What the control plane (and so the demo) needs. The node's components, kubectl,
# helm and Prometheus 3 are built, with progress, by what first needs them
# (`wukong dev up --node`, `kubectl`, the tests' fixtures), or by `wukong dev build --node`.
say "etcd and kube-apiserver (built once from the Go module proxy, cached in ~/.cache/wukong/bin)"
"$venv/bin/wukong" dev build
