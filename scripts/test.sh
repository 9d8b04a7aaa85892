#!/usr/bin/env bash
# Install what the tests need and run them: the README's test command, and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless Chromium and its driver for the end-to-end browser test (Debian packages).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  elif command -v sudo >/dev/null; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "chromium and chromium-driver are missing and cannot be installed without root" >&2
  fi
fi

python -m pip install -q -r requirements-dev.txt
python -m pytest "$@"
