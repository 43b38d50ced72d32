#!/usr/bin/env bash
# soak.sh DURATION [OUT_DIR] — mtftpd under mixed load for DURATION in a
# namespace lab of its own (scripts/netlab.sh -p sk<pid> up 4, or
# SOAK_PREFIX), sampled as it runs.
#
# Load, each in its own client namespace, looping until DURATION is over:
#   c1  unicast TFTP with `mtftpd get`, the three firmware profiles in turn
#       (bios: blksize 1432 lock-step; uefi: 1468, windowsize 4; linux:
#       65464, windowsize 64), every download checked with sha256
#   c2  multicast: atftp RFC 2090 (--option multicast) and `mtftpd get
#       --multicast` (the native dialect) in turn, checked likewise
#   c3  HTTP: curl of the mirror (whole file, then a Range), checked
#   c4  DHCP: `mtftpd bench dhcp` storms (DORA + RELEASE, 50 random MACs)
# Each loop pauses SOAK_PAUSE (1) seconds between downloads.
# Every SAMPLE seconds (60, or 10 for runs shorter than 10 minutes) the
# server's /metrics give one CSV row: RSS, heap, goroutines, open fds,
# transfers in flight, completed and failed transfers, DHCP ACKs and NAKs,
# HTTP 5xx, and the load loops' own failures so far. At the end the load
# stops, the server drains, one last row is taken, and soak.png plots RSS,
# goroutines and fds over time (gnuplot, if installed).
#
# Exit status 1 if any download or storm failed, the server logged an
# error or a panic, or goroutines/fds after the drain are above their
# first sample plus a margin (a leak). Needs root, ip, nft, curl, atftp.
# Output: OUT_DIR (default a temp dir) holds soak.csv, soak.png,
# server.log, the loops' logs and summary.txt.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
prog=soak
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

misuse() { echo "usage: soak.sh DURATION [OUT_DIR]   (DURATION: 120s, 20m, 1h)" >&2; exit 2; }
[ $# -ge 1 ] || misuse
case $1 in
  *h) DUR=$(( ${1%h} * 3600 )) ;;
  *m) DUR=$(( ${1%m} * 60 )) ;;
  *s) DUR=${1%s} ;;
  *[!0-9]*|'') misuse ;;
  *) DUR=$1 ;;
esac
[ "$DUR" -ge 30 ] && [ "$DUR" -le 86400 ] || { echo "soak: DURATION must be 30s..24h" >&2; exit 2; }
SAMPLE=${SOAK_SAMPLE:-$([ "$DUR" -lt 600 ] && echo 10 || echo 60)}
# Pause between two downloads of one loop: the soak is about time under
# steady load, not throughput, and the machine is shared.
PAUSE=${SOAK_PAUSE:-1}

# A prefix of its own: two soaks (a CI run beside `make soak`) must not
# take down each other's lab.
PREFIX=${SOAK_PREFIX:-sk$$}
OUT=${2:-$(mktemp -d /tmp/mtftpd-soak.XXXXXX)}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d /tmp/mtftpd-soak-work.XXXXXX)
SRV=192.0.2.1
HTTP=$SRV:8080
SRV_NS=$PREFIX-srv

at_exit 'rm -rf "$WORK"'
[ "$(id -u)" -eq 0 ] || die "needs root (network namespaces)"
for t in ip nft curl atftp; do command -v "$t" >/dev/null || die "$t not installed (scripts/test-deps.sh)"; done

BIN=${MTFTPD_BIN:-$WORK/mtftpd}
[ -n "${MTFTPD_BIN:-}" ] && BENCH_SKIP_BUILD=1
build_mtftpd "$BIN"

bash "$NETLAB" -p "$PREFIX" down >/dev/null 2>&1 || true
lab_up "$PREFIX" 4

mkdir -p "$WORK/root"
head -c $((4 << 20)) /dev/urandom >"$WORK/root/mid.bin"
head -c $((16 << 20)) /dev/urandom >"$WORK/root/big.img"
head -c 65536 /dev/urandom >"$WORK/root/small.bin"
(cd "$WORK/root" && sha256sum ./* >"$WORK/sums")
sum_of() { grep " \./$1\$" "$WORK/sums" | cut -d' ' -f1; }

cat >"$WORK/mtftpd.toml" <<EOF
[tftp]
listen = "$SRV:69"
root = "$WORK/root"
[http]
listen = "$HTTP"
[mtftp]
enabled = true
[dhcp]
mode = "server"
interfaces = ["eth0"]
lease_file = "$WORK/leases.json"
[[dhcp.subnet]]
prefix = "192.0.2.0/24"
range = "192.0.2.200-192.0.2.250"
lease_time = "10m"
[log]
format = "json"
level = "info"
EOF
ip netns exec "$SRV_NS" "$BIN" serve --config "$WORK/mtftpd.toml" 2>"$OUT/server.log" &
SRV_PID=$!
at_exit 'stop_pid "$SRV_PID"'
for _ in $(seq 1 100); do
  ip netns exec "$SRV_NS" curl -fs -o /dev/null "http://$HTTP/metrics" && break
  sleep 0.1
done
ip netns exec "$SRV_NS" curl -fs -o /dev/null "http://$HTTP/metrics" || die "server did not start: $(tail -n 5 "$OUT/server.log")"

END=$(( $(date +%s) + DUR ))
# check FILE NAME LOG: compare FILE with the served NAME; count a failure.
check() {
  local got; got=$(sha256sum "$1" 2>/dev/null | cut -d' ' -f1)
  if [ "$got" = "$(sum_of "$2")" ]; then echo ok; else echo "FAIL $2: sha256 ${got:-none}" >>"$3"; echo fail; fi
}
loop_unicast() {
  local out=$WORK/c1.bin log=$OUT/c1.log n=0 p
  while [ "$(date +%s)" -lt "$END" ]; do
    sleep "$PAUSE"
    p=$((n % 3)); n=$((n + 1))
    case $p in
      0) args=(--blksize 1432) ;;
      1) args=(--blksize 1468 --windowsize 4) ;;
      2) args=(--blksize 65464 --windowsize 64) ;;
    esac
    rm -f "$out"
    if ! ip netns exec "$PREFIX-c1" timeout 120 "$BIN" get -q "${args[@]}" -o "$out" "$SRV" mid.bin 2>>"$log"; then
      echo "FAIL get ${args[*]}" >>"$log"; continue
    fi
    [ "$(check "$out" mid.bin "$log")" = ok ] && echo "ok ${args[*]}" >>"$log"
  done
}
loop_multicast() {
  local out=$WORK/c2.bin log=$OUT/c2.log n=0
  while [ "$(date +%s)" -lt "$END" ]; do
    sleep "$PAUSE"
    n=$((n + 1)); rm -f "$out"
    if [ $((n % 2)) -eq 0 ]; then
      ip netns exec "$PREFIX-c2" timeout 120 atftp --option multicast --option "blksize 1428" -g -r mid.bin -l "$out" "$SRV" >>"$log" 2>&1 ||
        { echo "FAIL atftp multicast" >>"$log"; continue; }
    else
      ip netns exec "$PREFIX-c2" timeout 120 "$BIN" get -q --multicast -o "$out" "$SRV" mid.bin 2>>"$log" ||
        { echo "FAIL get --multicast" >>"$log"; continue; }
    fi
    [ "$(check "$out" mid.bin "$log")" = ok ] && echo "ok multicast $n" >>"$log"
  done
}
loop_http() {
  local out=$WORK/c3.bin log=$OUT/c3.log
  while [ "$(date +%s)" -lt "$END" ]; do
    sleep "$PAUSE"
    rm -f "$out"
    ip netns exec "$PREFIX-c3" curl -fsS -m 120 -o "$out" "http://$HTTP/big.img" 2>>"$log" || { echo "FAIL curl" >>"$log"; continue; }
    [ "$(check "$out" big.img "$log")" = ok ] || continue
    ip netns exec "$PREFIX-c3" curl -fsS -m 30 -r 1000-1999 -o "$out" "http://$HTTP/small.bin" 2>>"$log" || { echo "FAIL curl range" >>"$log"; continue; }
    if cmp -s "$out" <(tail -c +1001 "$WORK/root/small.bin" | head -c 1000); then echo ok >>"$log"; else echo "FAIL range bytes differ" >>"$log"; fi
  done
}
loop_dhcp() {
  local log=$OUT/c4.log
  while [ "$(date +%s)" -lt "$END" ]; do
    if ip netns exec "$PREFIX-c4" timeout 60 "$BIN" bench dhcp --iface eth0 --clients 50 --concurrency 10 --release >>"$log" 2>&1; then
      echo "ok storm" >>"$log"
    else
      echo "FAIL storm" >>"$log"
    fi
    sleep 2
  done
}
fails() { cat "$OUT"/c[1-4].log 2>/dev/null | grep -c '^FAIL' || true; }
oks() { cat "$OUT"/c[1-4].log 2>/dev/null | grep -c '^ok' || true; }

# The server's /metrics are read by `mtftpd bench soak` (bench/soak.go):
# a snapshot to a CSV row here, the first and last snapshots judged at the
# end. snapshot FILE saves one; sample appends its row to soak.csv.
START=$(date +%s)
"$BIN" bench soak --header >"$OUT/soak.csv"
snapshot() { ip netns exec "$SRV_NS" curl -fs -m 10 -o "$1" "http://$HTTP/metrics"; }
ROW=
sample() {
  snapshot "$WORK/last.prom" || { echo "soak: /metrics did not answer" >&2; ROW=; return 0; }
  ROW=$("$BIN" bench soak --row --elapsed $(( $(date +%s) - START )) --load-ok "$(oks)" --load-fail "$(fails)" "$WORK/last.prom") ||
    { echo "soak: cannot read /metrics" >&2; ROW=; return 0; }
  echo "$ROW" >>"$OUT/soak.csv"
}
sample # the baseline, before any load
cp "$WORK/last.prom" "$WORK/first.prom" || die "the first /metrics sample failed"
loop_unicast & L1=$!
loop_multicast & L2=$!
loop_http & L3=$!
loop_dhcp & L4=$!
echo "soak: ${DUR}s of load, a sample every ${SAMPLE}s into $OUT/soak.csv" >&2
while [ "$(date +%s)" -lt "$END" ]; do
  sleep "$SAMPLE"
  sample
  tail -n 1 "$OUT/soak.csv" >&2
done
wait "$L1" "$L2" "$L3" "$L4" || true
# Drain: every transfer done and reaped (bounded), then the last sample.
for _ in $(seq 1 60); do
  snapshot "$WORK/drain.prom" &&
    [ "$("$BIN" bench soak --row "$WORK/drain.prom" | cut -d, -f6)" = 0 ] && break
  sleep 1
done
sleep 2
sample

# ---------------------------------------------------------------- report
if command -v gnuplot >/dev/null; then
  gnuplot <<EOF || echo "soak: gnuplot failed" >&2
set terminal pngcairo size 1000,600 noenhanced
set output "$OUT/soak.png"
set datafile separator ","
set key autotitle columnhead outside bottom
set xlabel "elapsed (s)"
set ylabel "MB"
set y2label "count"
set y2tics
set yrange [0:*]
set y2range [0:*]
set title "mtftpd soak: ${DUR}s of unicast, multicast, HTTP and DHCP load"
plot "$OUT/soak.csv" using 1:2 with linespoints title "RSS MB" axes x1y1, \
     "" using 1:3 with linespoints title "heap MB" axes x1y1, \
     "" using 1:4 with linespoints title "goroutines" axes x1y2, \
     "" using 1:5 with linespoints title "open fds" axes x1y2
EOF
fi
loadfail=$(fails) loadok=$(oks)
srv_errors=$(grep -c '"level":"error"\|panic' "$OUT/server.log" || true)
status=0
# After the drain only the idle server is left: goroutines and fds back
# near the first sample (bench soak fails otherwise: a leak).
[ -n "$ROW" ] || { echo "soak: the last /metrics sample failed" >&2; status=1; }
{
  echo "soak ${DUR}s, samples every ${SAMPLE}s: $OUT/soak.csv"
  "$BIN" bench soak --csv "$OUT/soak.csv" "$WORK/first.prom" "$WORK/last.prom" 2>&1 || echo "LEAK" >"$WORK/leak"
  echo "load loops: $loadok ok, $loadfail failed; server error/panic log lines: $srv_errors"
} | tee "$OUT/summary.txt"
[ ! -e "$WORK/leak" ] || status=1
if [ "$loadfail" -gt 0 ]; then grep -h '^FAIL' "$OUT"/c[1-4].log | sort | uniq -c | head >&2; status=1; fi
[ "$srv_errors" -eq 0 ] || { grep '"level":"error"\|panic' "$OUT/server.log" | head -n 5 >&2; status=1; }
[ "$loadok" -gt 0 ] || { echo "soak: no load completed at all" >&2; status=1; }
[ "$status" -eq 0 ] && echo "soak: PASS" || echo "soak: FAIL" >&2
exit "$status"
