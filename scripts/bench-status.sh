#!/usr/bin/env bash
# bench-status.sh — what the status page costs the TFTP hot path: the
# aggregate throughput of CLIENTS concurrent downloads (mtftpd bench tftp)
# with nobody watching, and with VIEWERS status pages open (each polls
# /api/transfers once a second, as the page does: `mtftpd status --watch`)
# plus a Prometheus scrape of /metrics every second. Runs alternate (off, on, off, on, …) so drift
# on a shared machine hits both; the result is the median of on/off per
# pair. Everything runs on loopback: the server on 127.0.0.1, the clients
# spread over 127.1.0.1 onwards (distinct clients, as a room would be).
#
#   scripts/bench-status.sh
#
# Environment:
#   STATUS_BENCH_PAIRS=3          off/on pairs (1..10)
#   STATUS_BENCH_CLIENTS=200      concurrent downloads (1..1000)
#   STATUS_BENCH_VIEWERS=10       open status pages (1..200)
#   STATUS_BENCH_DURATION=20s     each run
#   STATUS_BENCH_PROFILE=uefi     bench tftp profile (blksize 1468, windowsize 4)
#   STATUS_BENCH_SIZE_MIB=4       file size
#   MTFTPD_BIN=/tmp/mtftpd-bench-status   built here unless STATUS_BENCH_SKIP_BUILD=1
#
# Results: the run as JSON in bench-out/status-YYYYmmdd-HHMMSS.json, rendered
# by `mtftpd bench report status` to markdown on stdout and in .md beside it.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

PAIRS=${STATUS_BENCH_PAIRS:-3}
CLIENTS=${STATUS_BENCH_CLIENTS:-200}
VIEWERS=${STATUS_BENCH_VIEWERS:-10}
DURATION=${STATUS_BENCH_DURATION:-20s}
PROFILE=${STATUS_BENCH_PROFILE:-uefi}
SIZE_MIB=${STATUS_BENCH_SIZE_MIB:-4}
MTFTPD_BIN=${MTFTPD_BIN:-/tmp/mtftpd-bench-status}
[[ "$PAIRS" =~ ^[0-9]+$ ]] && [ "$PAIRS" -ge 1 ] && [ "$PAIRS" -le 10 ] || die "STATUS_BENCH_PAIRS must be 1..10"
[[ "$CLIENTS" =~ ^[0-9]+$ ]] && [ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 1000 ] || die "STATUS_BENCH_CLIENTS must be 1..1000"
[[ "$VIEWERS" =~ ^[0-9]+$ ]] && [ "$VIEWERS" -ge 1 ] && [ "$VIEWERS" -le 200 ] || die "STATUS_BENCH_VIEWERS must be 1..200"
[[ "$SIZE_MIB" =~ ^[0-9]+$ ]] && [ "$SIZE_MIB" -ge 1 ] && [ "$SIZE_MIB" -le 1024 ] || die "STATUS_BENCH_SIZE_MIB must be 1..1024"
for t in curl jq sha256sum; do command -v "$t" >/dev/null || die "missing tool: $t"; done

REPO=$BENCH_REPO
TFTP=127.0.0.1:16989
HTTP=127.0.0.1:18089
WORK=$(mktemp -d /tmp/mtftpd-bench-status.XXXXXX)
SRV=
declare -a VIEWER_PIDS=()
stop_viewers() {
  local p
  for p in "${VIEWER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${VIEWER_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  VIEWER_PIDS=()
}
at_exit 'rm -rf "$WORK"'
at_exit 'stop_viewers; stop_pid "$SRV"'

[ "${STATUS_BENCH_SKIP_BUILD:-}" != 1 ] || BENCH_SKIP_BUILD=1
build_mtftpd "$MTFTPD_BIN"
mkdir -p "$WORK/root"
head -c $((SIZE_MIB << 20)) /dev/urandom >"$WORK/root/image.bin"
SUM=$(sha256sum "$WORK/root/image.bin" | cut -d' ' -f1)

"$MTFTPD_BIN" serve --tftp.root "$WORK/root" --tftp.listen "$TFTP" --http.listen "$HTTP" \
  --tftp.max_sessions 4096 --tftp.max_per_client 16 --log.level warn 2>"$WORK/server.log" &
SRV=$!
for i in $(seq 1 50); do
  curl -fs -o /dev/null "http://$HTTP/api/transfers" && break
  sleep 0.1
done
curl -fs -o /dev/null "http://$HTTP/api/transfers" || die "server did not come up: $(cat "$WORK/server.log")"

# poll URL SECONDS: a Prometheus scraper, a GET a second, bounded.
poll() {
  local end=$((SECONDS + $2))
  while [ "$SECONDS" -lt "$end" ]; do
    curl -fs -o /dev/null --max-time 5 "$1" || true
    sleep 1
  done
}

# view: one open status page, as `mtftpd status --watch` (one process
# polling once a second, as the page does: no fork per poll to take CPU
# from the run on this machine). Stopped by stop_viewers.
view() { exec "$MTFTPD_BIN" status --watch --interval 1s --recent 0 "http://$HTTP" >/dev/null 2>&1; }

# One loopback address per client: 127.1.0.1 up to 127.1.0.0 + CLIENTS.
SOURCES="127.1.0.1-127.1.$((CLIENTS / 256)).$((CLIENTS % 256))"
secs=${DURATION%s}
[[ "$secs" =~ ^[0-9]+$ ]] || die "STATUS_BENCH_DURATION must be whole seconds (e.g. 20s)"
run() { # label: one bench tftp run, its report in $WORK/label.json
  local label=$1 json="$WORK/$1.json"
  if [[ "$label" == on* ]]; then
    for v in $(seq 1 "$VIEWERS"); do view & VIEWER_PIDS+=($!); done
    poll "http://$HTTP/metrics" $((secs + 15)) & VIEWER_PIDS+=($!)
    sleep 1
  fi
  "$MTFTPD_BIN" bench tftp -q --target "$TFTP" --file image.bin --clients "$CLIENTS" --profile "$PROFILE" \
    --duration "$DURATION" --source-addrs "$SOURCES" --verify "sha256:$SUM" --json "$json" >"$WORK/$label.out" 2>&1 ||
    [ -s "$json" ] || die "bench run $label failed: $(tail -5 "$WORK/$label.out")"
  # A run with no download finished in time exits 1 but still measured
  # the bytes delivered; a failed (wrong or broken) download is fatal.
  jq -e '.failed == 0' "$json" >/dev/null || die "bench run $label had failed downloads: $(tail -5 "$WORK/$label.out")"
  stop_viewers
}

# cpu: the server's user+system CPU time so far, in clock ticks (fields
# 14 and 15 of /proc/PID/stat; comm may hold spaces).
cpu() {
  local s f
  s=$(<"/proc/$SRV/stat")
  read -r -a f <<<"${s##*) }"
  echo $((f[11] + f[12]))
}
mbps() { jq -r '.aggregate_mbps * 10 | round / 10' "$WORK/$1.json"; }

info "$CLIENTS clients, profile $PROFILE, ${SIZE_MIB} MiB file, $DURATION per run, $VIEWERS viewers + 1 scraper when on, $PAIRS pairs"
# Throughput on a shared machine is noisy; the server's CPU time per GB
# delivered is steadier, and is what the page would take from transfers
# on a busy server.
: >"$WORK/pairs.jsonl"
for p in $(seq 1 "$PAIRS"); do
  c0=$(cpu); run "off$p"; c1=$(cpu); run "on$p"; c2=$(cpu)
  jq -cn --slurpfile off "$WORK/off$p.json" --slurpfile on "$WORK/on$p.json" --argjson t0 $((c1 - c0)) --argjson t1 $((c2 - c1)) \
    '{off: ($off[0] | {aggregate_mbps, bytes, server_cpu_ticks: $t0}), on: ($on[0] | {aggregate_mbps, bytes, server_cpu_ticks: $t1})}' \
    >>"$WORK/pairs.jsonl"
  info "pair $p: off $(mbps "off$p") MB/s ($((c1 - c0)) CPU ticks), on $(mbps "on$p") MB/s ($((c2 - c1)) ticks)"
done
# What the pages cost an idle server (no transfers; 256 recent ones in
# the ring from the runs above): its CPU time per second of polling.
IDLE=30
for v in $(seq 1 "$VIEWERS"); do view & VIEWER_PIDS+=($!); done
poll "http://$HTTP/metrics" $IDLE & VIEWER_PIDS+=($!)
c0=$(cpu); sleep $IDLE; c1=$(cpu)
stop_viewers

# The run as JSON (docs/bench-json.md), rendered by `mtftpd bench report status`.
mkdir -p "$REPO/bench-out"
out="$REPO/bench-out/status-$(date -u +%Y%m%d-%H%M%S)"
jq -n --arg date "$(date -u +%FT%TZ)" --argjson host "$(host_json)" --argjson clients "$CLIENTS" --argjson viewers "$VIEWERS" \
  --arg profile "$PROFILE" --argjson size "$SIZE_MIB" --arg dur "$DURATION" --argjson clk "$(getconf CLK_TCK)" \
  --slurpfile pairs "$WORK/pairs.jsonl" --argjson idle $((c1 - c0)) --argjson secs "$IDLE" \
  '{date: $date, host: $host, clients: $clients, viewers: $viewers, profile: $profile, size_mib: $size, duration: $dur,
    clk_tck: $clk, pairs: $pairs, idle_cpu_ticks: $idle, idle_seconds: $secs}' >"$out.json"
"$MTFTPD_BIN" bench report status --in "$out.json" -o "$out.md" || die "bench report status failed (the run is in $out.json)"
cat "$out.md"
