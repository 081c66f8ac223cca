#!/usr/bin/env bash
# Make sure headless Chromium and its WebDriver (Debian packages `chromium`, `chromium-driver`) are
# installed for the web page's end-to-end test (tests/serve_app/test_browser_e2e.py), plus a Korean font
# (`fonts-nanum`, best effort) so the K-Fashion labels in its screenshot are readable.
#
#   scripts/ensure_browser.sh      # called by `make test`; does nothing when everything is present
#
# As root on Debian/Ubuntu it installs the packages with apt-get --no-install-recommends, running
# `apt-get update` only when the first attempt fails. Otherwise it only says what is missing: the e2e
# test then skips with a reason and every other test still runs. It never fails the build.
# CHROMIUM / CHROMEDRIVER override the paths (the test reads the same variables).
set -u

CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
CHROMEDRIVER=${CHROMEDRIVER:-/usr/bin/chromedriver}

have_browser() { [ -x "$CHROMIUM" ] && [ -x "$CHROMEDRIVER" ]; }
have_font() { [ -d /usr/share/fonts/truetype/nanum ] || { command -v fc-list >/dev/null 2>&1 && [ -n "$(fc-list :lang=ko 2>/dev/null)" ]; }; }
can_install() { [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; }

apt_install() {  # apt_install PKG...: install; on failure refresh the package lists once and retry
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" && return 0
    echo "ensure_browser: apt-get install $* failed; running apt-get update and trying again"
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

if have_browser; then
    echo "ensure_browser: chromium and chromedriver present ($CHROMIUM, $CHROMEDRIVER)"
elif can_install; then
    echo "ensure_browser: installing chromium and chromium-driver with apt-get (once; ~100 MB, ~1 min)..."
    apt_install chromium chromium-driver
    if have_browser; then
        echo "ensure_browser: installed $("$CHROMIUM" --version 2>/dev/null | head -n1)"
    else
        echo "ensure_browser: could not install chromium/chromium-driver; the browser test will be skipped."
    fi
else
    echo "ensure_browser: chromium/chromedriver not found at $CHROMIUM / $CHROMEDRIVER and this is not a" \
         "root shell with apt-get, so nothing was installed."
    echo "ensure_browser: the web page's browser test (tests/serve_app/test_browser_e2e.py) will be skipped."
    echo "ensure_browser: to run it: sudo apt-get install chromium chromium-driver fonts-nanum" \
         "(or set CHROMIUM and CHROMEDRIVER to their paths)."
    exit 0
fi

if have_browser && ! have_font && can_install; then
    echo "ensure_browser: installing fonts-nanum (Korean labels in screenshots; best effort)..."
    apt_install fonts-nanum >/dev/null || echo "ensure_browser: fonts-nanum not installed (screenshots show boxes for Korean text)"
fi
exit 0
