#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine with Go: the real
# Prometheus (and promtool), Etsy StatsD from npm, clang for wasm32-wasi
# guests, and the Debian Python packages of the Python workers' tests.
# Idempotent: it installs only what is missing. Needs root for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_pkgs=()
command -v prometheus >/dev/null || apt_pkgs+=(prometheus)
command -v promtool >/dev/null || apt_pkgs+=(prometheus)
command -v clang >/dev/null || apt_pkgs+=(clang)
command -v wasm-ld >/dev/null || apt_pkgs+=(lld)
[ -e /usr/include/wasm32-wasi/stdlib.h ] || [ -e /usr/share/wasi-sysroot/include/wasm32-wasi/stdlib.h ] || [ -e /usr/share/wasi-sysroot/include/stdlib.h ] || apt_pkgs+=(wasi-libc)
ls /usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a >/dev/null 2>&1 || apt_pkgs+=(libclang-rt-dev-wasm32)
command -v node >/dev/null || apt_pkgs+=(nodejs npm)
# Python workers (clients/python, tests/python_test.go): the system python3,
# its headers and setuptools to build the C extension, gunicorn for the
# example, prometheus_client for the side-by-side benchmark.
py=/usr/bin/python3
[ -x "$py" ] || apt_pkgs+=(python3)
command -v gcc >/dev/null || apt_pkgs+=(gcc)
[ -x "$py" ] && "$py" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null || apt_pkgs+=(python3-dev)
[ -x "$py" ] && "$py" -c 'import setuptools' 2>/dev/null || apt_pkgs+=(python3-setuptools)
[ -x "$py" ] && "$py" -c 'import prometheus_client' 2>/dev/null || apt_pkgs+=(python3-prometheus-client)
command -v gunicorn >/dev/null || apt_pkgs+=(gunicorn)

if [ ${#apt_pkgs[@]} -gt 0 ]; then
  echo "install-deps: apt-get install ${apt_pkgs[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >/dev/null
fi

if [ ! -f .cache/node/node_modules/statsd/stats.js ]; then
  echo "install-deps: npm install statsd@0.9.0"
  mkdir -p .cache/node
  npm install --prefix .cache/node --omit=optional --no-audit --no-fund statsd@0.9.0 >/dev/null
fi
echo "install-deps: ok"
