#!/usr/bin/env bash
# Debian packages the course needs beyond Python: a CJK font so matplotlib can draw the Chinese dish names
# in plots, and headless Chromium for the web UI's browser test. Nothing is fetched when both are present.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! fc-list 2>/dev/null | grep -qi "wqy\|noto sans cjk"; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q fonts-wqy-microhei fontconfig
    # matplotlib caches the font list; drop the caches so the new font is seen.
    rm -rf ~/.cache/matplotlib
fi
bash scripts/install_browser.sh
