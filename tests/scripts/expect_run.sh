#!/usr/bin/env bash
# Runs a command for a ctest and passes only when BOTH its exit status is the
# expected one and its output (stdout and stderr) matches an extended regex.
# PASS_REGULAR_EXPRESSION alone ignores the exit status, so a command that
# printed the right line and then failed (or should have failed) would pass.
# Usage: expect_run.sh RC REGEX COMMAND [ARGS...]
set -u
want_rc="$1"
regex="$2"
shift 2
out="$("$@" 2>&1)"
rc=$?
printf '%s\n' "$out"
if [ "$rc" -ne "$want_rc" ]; then
  echo "expect_run: exit status $rc, expected $want_rc: $*"
  exit 1
fi
if ! printf '%s\n' "$out" | grep -Eq -- "$regex"; then
  echo "expect_run: output does not match /$regex/: $*"
  exit 1
fi
echo "expect_run: ok (exit status $rc, output matches)"
