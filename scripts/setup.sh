#!/usr/bin/env bash
# Installs what the project needs on a Debian/Ubuntu box, skipping what is already there:
# apt packages (C libraries for librdkafka, protoc, redis-server, python3-venv), the wasm32-wasip2
# rustup target, the Tansu broker (cargo install, 10-13 minutes the first time) and the Python
# venv with NX-27017. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
NX_VERSION=0.8.1
APT_PACKAGES=(build-essential pkg-config cmake protobuf-compiler libcurl4-openssl-dev libsasl2-dev
  libssl-dev zlib1g-dev libzstd-dev redis-server python3-venv)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 rustup target"
  rustup target add wasm32-wasip2
fi

if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  say "installing the Tansu broker $TANSU_VERSION (cargo install, about 10-13 minutes on 2 cores)"
  cargo install tansu --version "$TANSU_VERSION" --features libsql --locked
fi

if [ ! -x .venv/bin/nx-27017 ]; then
  say "creating .venv with NX-27017 $NX_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "nx-27017==$NX_VERSION"
fi
say "all set"
