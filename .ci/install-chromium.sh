#!/usr/bin/env bash
# Headless Chromium for the live-page test of the example chat service (tests/test_chat_service.py).
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
