#!/usr/bin/env bash
# Installs the system packages the build needs, only when missing.
# Pingora builds zlib-ng (cmake) and links OpenSSL (pkg-config, libssl-dev); jemalloc needs make + a C compiler.
set -euo pipefail

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v curl >/dev/null 2>&1 || need+=(curl)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
for pkg in "$@"; do
  # Extra packages named by the caller: "pkg" or "pkg:command".
  name="${pkg%%:*}"; cmd="${pkg#*:}"
  if [ "$cmd" = "$pkg" ]; then dpkg -s "$name" >/dev/null 2>&1 || need+=("$name");
  else command -v "$cmd" >/dev/null 2>&1 || need+=("$name"); fi
done

if [ ${#need[@]} -gt 0 ]; then
  echo "install-deps: installing ${need[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "install-deps: cargo not found; install Rust (rustup) first" >&2; exit 1; }
