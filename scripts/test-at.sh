#!/usr/bin/env bash
# Runs the test suite (or the cargo test arguments given after the instant) with the clock of
# every process moved to a calendar instant where a date bug would show, using Debian's
# faketime (scripts/test.sh installs it):
#   month-end  23:30 UTC on the last day of this month: Berlin is already in the next month
#   new-year   00:05 UTC on the next 1 January (01:05 in Berlin): a new year, month and period
#   dst        00:50 UTC on the next last Sunday of March: 10 minutes before Berlin's clocks
#              jump from 02:00 CET to 03:00 CEST
# The clock is moved by an offset and runs on (FAKETIME="+Ns"), so every process of a run (the
# test binary, the ratingd and ratectl it starts, openssl) reads the same time. The monotonic
# clock is left alone: timeouts and sleeps measure real time. Doc tests are left out (`--tests`):
# rustdoc compiles them, and rustc's allocator, like redis-server's, hangs under libfaketime
# (the tests start redis-server without it).
set -euo pipefail
cd "$(dirname "$0")/.."
instant="${1:?usage: scripts/test-at.sh month-end|new-year|dst [cargo test args...]}"
shift
this_month="$(date -u +%Y-%m-01)"
case "$instant" in
  month-end) at="$(date -u -d "$this_month +1 month -30 minutes" +%s)" ;;
  new-year) at="$(date -u -d "$(( $(date -u +%Y) + 1 ))-01-01 00:05:00" +%s)" ;;
  dst)
    year="$(date -u +%Y)"
    [ "$(date -u +%m)" -ge 4 ] && year=$((year + 1))
    # The last Sunday of March: 31 March minus its weekday number (Sunday = 0).
    last_sunday=$(( 31 - $(date -u -d "$year-03-31" +%w) ))
    at="$(date -u -d "$year-03-$last_sunday 00:50:00" +%s)"
    ;;
  *) echo "test-at.sh: unknown instant $instant" >&2; exit 2 ;;
esac
command -v faketime >/dev/null || { echo "test-at.sh: faketime is missing (scripts/test.sh installs it)" >&2; exit 1; }
offset=$(( at - $(date -u +%s) ))
echo "test-at.sh: running at $(date -u -d "@$at" '+%Y-%m-%d %H:%M:%S UTC') ($instant, offset ${offset}s)"
# Build first on the real clock, so the run under faketime only runs.
cargo test --workspace --locked --tests --no-run "$@" >/dev/null 2>&1 || cargo test --workspace --locked --tests --no-run "$@"
export TZ=UTC FAKETIME_DONT_FAKE_MONOTONIC=1
faketime -f "+${offset}s" cargo test --workspace --locked --tests "$@"
