#!/usr/bin/env bash
# Installs everything xenrpc needs on a fresh Debian 12 machine. Idempotent; run as root.
#   tools/setup.sh          Rust target + Xen testbed packages + the benchmarks' peers
#   tools/setup.sh --rust   only the Rust target (enough for host tests; the peers' crate then
#                           builds them as unavailable and says why)
set -euo pipefail

log() { printf '[setup] %s\n' "$*"; }

need_rust_target() {
    if ! rustup target list --installed | grep -qx x86_64-unknown-none; then
        log "rustup target add x86_64-unknown-none"
        rustup target add x86_64-unknown-none
    fi
    for c in rustfmt clippy; do
        if ! rustup component list --installed 2>/dev/null | grep -q "^$c"; then
            log "rustup component add $c"
            rustup component add "$c" || log "warning: could not add $c"
        fi
    done
}

testbed_pkgs=(xen-hypervisor-4.17-amd64 xen-utils-4.17 linux-image-amd64 busybox-static cpio)
# The peers xenrpc is measured beside (peers/): SunRPC = libtirpc + rpcgen, gRPC = tonic + protoc,
# libxenvchan = libxen-dev (its header and the libraries to link; xen-utils brings the run-time ones).
peer_pkgs=(libtirpc-dev rpcsvc-proto protobuf-compiler pkg-config libxen-dev)

missing_pkgs() {
    local p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || printf '%s\n' "$p"
    done
}

apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        # An unreachable third-party source must not stop us: Debian's own lists are what we need.
        apt-get update -qq || log "warning: apt-get update reported errors (continuing)"
        apt_updated=1
    fi
}

need_testbed() {
    [ "$(id -u)" = 0 ] || { echo "setup: the testbed packages need root (apt-get)" >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    local missing
    missing=$(missing_pkgs "${testbed_pkgs[@]}" "${peer_pkgs[@]}")
    if [ -n "$missing" ]; then
        apt_update_once
        log "apt-get install $(echo $missing)"
        # xen-utils pulls in a xen init setup that tries to start services; harmless in a container.
        apt-get install -y -qq --no-install-recommends $missing
    fi
    if ! command -v qemu-system-x86_64 >/dev/null; then
        # Plain bookworm's qemu-system-x86 conflicts with the preinstalled qemu-utils from backports.
        local src=/etc/apt/sources.list.d/xenrpc-backports.sources
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding bookworm-backports apt source"
            cat >"$src" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
            apt_updated=0
        fi
        apt_update_once
        log "apt-get install -t bookworm-backports qemu-system-x86"
        apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
    fi
}

need_rust_target
if [ "${1:-}" != "--rust" ]; then
    need_testbed
fi
log "done"
