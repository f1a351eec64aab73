#!/bin/sh
# System packages outside pip that maxact's tests and `maxact demo` use, installed when missing:
#   chromium         headless screenshots (`maxact demo`'s gallery picture, the gallery tests)
#   chromium-driver  WebDriver for the gallery tests that click, sort and filter (tests only)
#   postgresql       the server the store tests and the replica tests start (initdb + pg_ctl,
#                    tests only; Debian keeps them in /usr/lib/postgresql/VERSION/bin)
# Installs them with apt-get when this runs as root on Debian/Ubuntu; otherwise prints what to
# install. What is still missing afterwards is written to the file named by $1 (the tests that
# need it skip with that reason); the file is removed when nothing is missing.
set -u
status="${1:?usage: sysdeps.sh STATUS_FILE}"
pg_root="${SYSDEPS_POSTGRESQL_ROOT:-/usr/lib/postgresql}"

has_initdb() {
  command -v initdb >/dev/null 2>&1 && return 0
  for tool in "$pg_root"/*/bin/initdb; do
    [ -x "$tool" ] && return 0
  done
  return 1
}

missing() {
  gone=""
  command -v chromium >/dev/null 2>&1 || gone="$gone chromium"
  command -v chromedriver >/dev/null 2>&1 || gone="$gone chromium-driver"
  has_initdb || gone="$gone postgresql"
  echo "$gone"
}

rm -f "$status"
need="$(missing)"
[ -z "$need" ] && { echo "sysdeps: chromium, chromium-driver and postgresql are installed"; exit 0; }

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: apt-get install$need"
  export DEBIAN_FRONTEND=noninteractive
  # apt-get's log goes to a file; the terminal gets one line per package it set up (and the
  # log's tail when it fails)
  log="$(mktemp)"
  # shellcheck disable=SC2086  # one word per package
  apt-get install -y -q --no-install-recommends $need >"$log" 2>&1 \
    || { apt-get update -q >>"$log" 2>&1 \
         && apt-get install -y -q --no-install-recommends $need >>"$log" 2>&1; }
  sed -n 's/^Setting up \([^ ]*\) (\([^)]*\)).*/sysdeps: installed \1 \2/p' "$log"
  need="$(missing)"
  if [ -z "$need" ]; then rm -f "$log"; exit 0; fi
  echo "sysdeps: the end of apt-get's log:"
  tail -n 15 "$log"
  rm -f "$log"
  reason="apt-get could not install$need"
elif command -v apt-get >/dev/null 2>&1; then
  reason="not installed:$need (installing needs root: sudo apt-get install$need)"
else
  reason="not installed:$need (no apt-get here: install Chromium, chromedriver and PostgreSQL yourself)"
fi
echo "sysdeps: $reason; the tests that need them are skipped"
mkdir -p "$(dirname "$status")"
echo "$reason" > "$status"
exit 0
