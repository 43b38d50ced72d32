#!/usr/bin/env bash
# bench-storm.sh — a boot storm against a server starved of CPU (issue 16):
# the server limited to half a core (cgroup CPU quota 50 ms per 100 ms),
# `mtftpd bench tftp --profile bios` swarms of 200 and 500 clients, for
# mtftpd (per-session ports, and tftp.single_port) and tftpd-hpa under the
# same limit (called by `make bench-storm`; root).
#
#   scripts/bench-storm.sh
#
# Servers and swarm run on loopback in the current namespace (bench tftp
# gives each client its own address from 127.77.0.1); the server alone is
# in the CPU-limited cgroup (cgroup v2 cpu.max "50000 100000", or v1
# cpu.cfs_quota_us 50000 / cpu.cfs_period_us 100000), removed at exit.
# Each point: one 1 MiB download per client (retransmits, timeouts,
# completion), then one 1 KiB download per client, whose duration is the
# time from the RRQ to the first (and only) DATA and its ACK: how long a
# request of a storm waits for its answer (PXE ROMs time out after ~4 s).
#
# Per point: completed/clients, client timeouts, duplicates the clients saw
# (retransmits that reached them), server retransmits, spurious and late
# answers (mtftpd's counters, /metrics), kernel drops on the listening
# socket, transfer p50/p99 and first-DATA p50/p99, throttled periods.
#
# Environment:
#   STORM_CLIENTS="200 500"   swarm sizes
#   STORM_QUOTA=50000         CPU quota in µs per 100 ms period
#   STORM_SERVERS="mtftpd mtftpd-single tftpd-hpa"
#   STORM_MTFTPD_FLAGS="--tftp.max_unconfirmed_per_prefix 512"   extra serve flags
#   BENCH_SKIP_BUILD=1        use an existing $MTFTPD_BIN
#   MTFTPD_BIN=/tmp/mtftpd-storm
#
# Results: a markdown table on stdout and bench-out/storm-YYYYmmdd-HHMMSS.json
# (one bench tftp report per point, with the server-side figures).

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (a CPU cgroup)"
for t in jq curl timeout; do command -v "$t" >/dev/null || die "missing tool: $t"; done

CLIENTS=${STORM_CLIENTS:-200 500}
QUOTA=${STORM_QUOTA:-50000}
SERVERS=${STORM_SERVERS:-mtftpd mtftpd-single tftpd-hpa}
read -r -a XFLAGS <<<"${STORM_MTFTPD_FLAGS:-}"
MTFTPD_BIN=${MTFTPD_BIN:-/tmp/mtftpd-storm}
PORT=16979 HPORT=16980
build_mtftpd "$MTFTPD_BIN"
if [[ " $SERVERS " == *" tftpd-hpa "* ]] && [ -z "$HPA_BIN" ]; then
  die "tftpd-hpa's in.tftpd not found (scripts/test-deps.sh unpacks it in $HPA_UNPACKED)"
fi

WORK=$(mktemp -d /tmp/bench-storm.XXXXXX)
at_exit 'rm -rf "$WORK"'
ROOT=$WORK/root
mkdir -p "$ROOT" "$BENCH_REPO/bench-out"
chmod 755 "$WORK" "$ROOT"
head -c $((1 << 20)) /dev/urandom >"$ROOT/big"
head -c 1024 /dev/urandom >"$ROOT/small"
chmod 644 "$ROOT"/*
OUT=$BENCH_REPO/bench-out/storm-$(date -u +%Y%m%d-%H%M%S).json

# cpu_cgroup NAME: a cgroup limited to QUOTA µs per 100 ms; sets CG.
CG=
cpu_cgroup() {
  if grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
    CG=/sys/fs/cgroup/$1
    grep -qw cpu /sys/fs/cgroup/cgroup.subtree_control || echo +cpu >/sys/fs/cgroup/cgroup.subtree_control
    mkdir "$CG"
    echo "$QUOTA 100000" >"$CG/cpu.max"
  elif [ -w /sys/fs/cgroup/cpu/cgroup.procs ]; then
    CG=/sys/fs/cgroup/cpu/$1
    mkdir "$CG"
    echo 100000 >"$CG/cpu.cfs_period_us"
    echo "$QUOTA" >"$CG/cpu.cfs_quota_us"
  else
    die "no writable cpu controller (cgroup v2 cpu.max or v1 cpu.cfs_quota_us)"
  fi
}
cg_gone() { # kill what is left in CG and remove it
  [ -n "$CG" ] && [ -d "$CG" ] || return 0
  local p i
  while read -r p; do kill -KILL "$p" 2>/dev/null || true; done <"$CG/cgroup.procs"
  for i in $(seq 1 50); do rmdir "$CG" 2>/dev/null && break; sleep 0.1; done
  [ -d "$CG" ] && warn "could not remove cgroup $CG"
  CG=
}
at_exit 'cg_gone'
throttled() { awk '$1=="nr_throttled"{print $2}' "$CG/cpu.stat"; }

SPID=
start_server() { # name
  case $1 in
    mtftpd) "$MTFTPD_BIN" serve --tftp.listen "127.0.0.1:$PORT" --tftp.root "$ROOT" \
      --http.listen "127.0.0.1:$HPORT" --log.format json "${XFLAGS[@]}" >"$WORK/$1.log" 2>&1 & ;;
    mtftpd-single) "$MTFTPD_BIN" serve --tftp.listen "127.0.0.1:$PORT" --tftp.root "$ROOT" --tftp.single_port \
      --http.listen "127.0.0.1:$HPORT" --log.format json "${XFLAGS[@]}" >"$WORK/$1.log" 2>&1 & ;;
    tftpd-hpa) "$HPA_BIN" --foreground --listen --user nobody --address "127.0.0.1:$PORT" --secure "$ROOT" \
      >"$WORK/$1.log" 2>&1 & ;;
  esac
  SPID=$!
  echo "$SPID" >"$CG/cgroup.procs"
  at_exit "kill $SPID 2>/dev/null || true"
  local _
  for _ in $(seq 1 100); do
    if timeout 5 "$MTFTPD_BIN" bench tftp -q --target "127.0.0.1:$PORT" --file small --clients 1 >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$1 did not serve within ~20 s: $(tail -n 5 "$WORK/$1.log")"
}
stop_server() { stop_pid "$SPID"; SPID=; }

metric() { # name -> value of mtftpd_tftp_NAME_total, or null (not mtftpd)
  curl -sf "http://127.0.0.1:$HPORT/metrics" 2>/dev/null | awk -v n="mtftpd_tftp_$1_total" '$1==n{v=$2} END{print (v==""?"null":v)}'
}
server_figures() { # name -> JSON of the server-side counters
  if [[ $1 == mtftpd* ]]; then
    printf '{"retransmits":%s,"spurious":%s,"late_answers":%s,"timeouts":%s,"evicted":%s,"rate_limited":%s,"session_limited":%s,"listener_drops":%s}' \
      "$(metric retransmits)" "$(metric spurious)" "$(metric late_answers)" "$(metric timeouts)" \
      "$(metric evicted)" "$(metric rate_limited)" "$(metric session_limited)" \
      "$(curl -sf "http://127.0.0.1:$HPORT/metrics" | awk '$1=="mtftpd_tftp_listener_drops_total"{v=$2} END{print (v==""?"null":v)}')"
  else
    echo '{}'
  fi
}

echo '[]' >"$OUT"
for srv in $SERVERS; do
  for n in $CLIENTS; do
    info "$srv: $n clients, server at $QUOTA µs per 100 ms"
    cpu_cgroup "mtftpd-storm-$$-$srv-$n"
    start_server "$srv"
    t0=$(throttled)
    timeout 900 "$MTFTPD_BIN" bench tftp -q --target "127.0.0.1:$PORT" --file big --profile bios \
      --clients "$n" --verify-file "$ROOT/big" --json "$WORK/big.json" >"$WORK/bench.log" 2>&1 || warn "$srv $n: bench tftp failed"
    timeout 300 "$MTFTPD_BIN" bench tftp -q --target "127.0.0.1:$PORT" --file small --profile bios \
      --clients "$n" --json "$WORK/small.json" >>"$WORK/bench.log" 2>&1 || warn "$srv $n: bench tftp (first DATA) failed"
    thr=$(($(throttled) - t0))
    srvj=$(server_figures "$srv")
    stop_server
    cg_gone
    jq --arg s "$srv" --argjson n "$n" --argjson thr "$thr" --argjson srv "$srvj" \
      --slurpfile big "$WORK/big.json" --slurpfile small "$WORK/small.json" \
      '. + [{server: $s, clients: $n, quota_us: '"$QUOTA"', throttled_periods: $thr, server_side: $srv,
             big: $big[0], first_data: $small[0]}]' "$OUT" >"$OUT.tmp" && mv "$OUT.tmp" "$OUT"
  done
done
info "wrote $OUT"
echo "| server | clients | completed | client timeouts | dups seen | server retransmits | spurious | late answers | transfer p50/p99 ms | first DATA p50/p99 ms | first-DATA timeouts |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
jq -r '.[] | "| \(.server) | \(.clients) | \(.big.completed)/\(.clients) | \(.big.timeouts) | \(.big.duplicates) | \(.server_side.retransmits // "n/a") | \(.server_side.spurious // "n/a") | \(.server_side.late_answers // "n/a") | \(.big.transfer_ms.p50|floor)/\(.big.transfer_ms.p99|floor) | \(.first_data.transfer_ms.p50|floor)/\(.first_data.transfer_ms.p99|floor) | \(.first_data.timeouts) |"' "$OUT"
