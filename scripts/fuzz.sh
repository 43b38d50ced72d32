#!/usr/bin/env bash
# Runs every Go fuzz target in the module for the given time each
# (default 5s). Crashers land in testdata/fuzz/ and become regression cases.
#
# Go 1.26's fuzz coordinator can fail a run with a bare "context deadline
# exceeded" at the -fuzztime boundary while a worker is mid-call
# (golang/go#75804, fixed in Go 1.27). A real finding always writes a
# reproducer ("Failing input written to ..."), so: a failure with a
# reproducer fails; a bare deadline failure is retried once; anything else
# fails.
set -uo pipefail
cd "$(dirname "$0")/.."
t=${1:-5s}
passed=0 failed=0 flaked=0
run() { # pkg target -> 0 ok, 1 real failure, 2 deadline flake
  local out
  out=$(go test -run '^$' -fuzz "^$2\$" -fuzztime "$t" "$1" 2>&1)
  local rc=$?
  echo "$out" | tail -n 3
  [ $rc -eq 0 ] && return 0
  if echo "$out" | grep -q "Failing input written"; then echo "$out"; return 1; fi
  if echo "$out" | grep -q "context deadline exceeded" && ! echo "$out" | grep -q "panic:"; then return 2; fi
  echo "$out"
  return 1
}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fz in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "== fuzz $pkg $fz ($t)"
    run "$pkg" "$fz"; rc=$?
    if [ $rc -eq 2 ]; then
      echo "fuzz: $fz hit the -fuzztime deadline race (golang/go#75804), no reproducer: retrying once"
      run "$pkg" "$fz"; rc=$?
      [ $rc -eq 2 ] && { flaked=$((flaked+1)); echo "fuzz: $fz deadline race again, no reproducer: not a finding"; continue; }
    fi
    if [ $rc -eq 0 ]; then passed=$((passed+1)); else failed=$((failed+1)); echo "fuzz: $fz FAILED"; fi
  done
done
[ $flaked -gt 0 ] && echo "fuzz: $flaked target(s) hit the deadline race twice without a reproducer"
echo "fuzz: $passed passed, $failed failed"
[ $failed -eq 0 ]
