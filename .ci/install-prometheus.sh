#!/usr/bin/env bash
# promtool and prometheus for the monitoring tests (Debian's prometheus package).
set -euo pipefail
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi
# The package may start its own daemon where an init system runs; the tests start theirs.
pkill -x prometheus 2>/dev/null || true
