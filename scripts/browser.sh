#!/usr/bin/env bash
# The browser the dashboard test drives: Debian's Chromium (Playwright cannot
# download its own builds here), used through executable_path=/usr/bin/chromium.
#   scripts/browser.sh ensure   install chromium with apt if it is missing
#   scripts/browser.sh path     print its path
set -euo pipefail

CHROMIUM=/usr/bin/chromium

case "${1:-ensure}" in
  ensure)
    if [ -x "$CHROMIUM" ]; then
      exit 0
    fi
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
    "$CHROMIUM" --version
    ;;
  path)
    echo "$CHROMIUM"
    ;;
  *)
    sed -n '2,5p' "$0"
    exit 2
    ;;
esac
