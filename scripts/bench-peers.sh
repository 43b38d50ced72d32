#!/usr/bin/env bash
# bench-peers.sh — mtftpd side by side with the servers people use today, in
# one run on this machine (`make bench-peers`):
#   TFTP   mtftpd (default and single-port mode, mtftpd-sp) vs tftpd-hpa
#          (in.tftpd), atftpd and dnsmasq (TFTP only), the same file and
#          client profile for each, at 1, 10, 50 and 200 clients (`mtftpd
#          bench tftp`), plus 10 clients at blksize 65464, 200 lock-step
#          clients at blksize 512, and mtftpd alone (both modes) at 500
#          clients (memory, everyone completes); the lock-step points
#          (bios, b512) run the swarm's batch engine (--engine batch: a
#          few shared sockets and event loops, far less CPU per block than
#          a goroutine and socket per client, which shared the 2 cores
#          with the server and squeezed every ratio towards 1;
#          profile_args);
#   DHCP   mtftpd vs dnsmasq vs Kea (scripts/bench-dhcp.sh);
#   mcast  not run here: `make bench-mcast` (scripts/bench-mcast.sh) measures
#          the native dialect against udpcast and RFC 2090 against atftpd;
#          the report links its last run (docs/benchmarks-mcast.md).
#
#   scripts/bench-peers.sh
#
# Runs in a fresh namespace lab (scripts/netlab.sh -p mtbp up 1): every server
# in mtbp-srv on 192.0.2.1:69, started fresh for each point and stopped after
# it, alone (never two servers at once); the swarm in mtbp-c1, its clients
# spread over 90 extra addresses 192.0.2.10-99 of that namespace (a room of
# machines, and under mtftpd's 16 transfers per client address). Per point:
# the swarm's report (aggregate MB/s, per-download p50/p95/p99, success,
# retransmits seen), server CPU seconds (a cpuacct cgroup, forked children
# included), peak anonymous RSS (RssAnon of the server's processes, sampled
# every 0.2 s) and VmHWM, and the kernel's UDP drop counters (/proc/net/snmp
# of both namespaces). Every download is verified (sha256). Needs root.
#
# Environment:
#   BENCH_FILE_MB=8        size of the file every client downloads
#   BENCH_POINT_MAX=150    seconds: cap of one point (bench tftp --max-time)
#   BENCH_POINTS="..."     override the points: "PROFILE:CLIENTS:COUNT ..."
#   BENCH_NO_DHCP=1        skip the DHCP part
#   BENCH_DHCP_CLIENTS=3000  clients per DHCP storm (bench-dhcp.sh BENCH_CLIENTS)
#   BENCH_SKIP_BUILD=1     use an existing $MTFTPD_BIN instead of building
#   MTFTPD_BIN=/tmp/mtftpd-bench-peers
#   BENCH_CACHE=/var/cache/mtftpd-bench   where the atftpd .deb is unpacked
#   BENCH_OUT=docs/benchmarks.md          the report (its plot: same name, .png)
#
# Results: BENCH_OUT (a section between <!-- notes --> and <!-- /notes --> is
# kept from the previous file), its PNG plot, and in
# bench-out/peers-YYYYmmdd-HHMMSS/ the raw JSON reports and run.json, from
# which `mtftpd bench report peers` renders BENCH_OUT.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 69)"

REPO=$BENCH_REPO
PREFIX=mtbp
SRV_NS=$PREFIX-srv CLI_NS=$PREFIX-c1
SRV_ADDR=192.0.2.1
SOURCES=192.0.2.10-192.0.2.99
FILE_MB=${BENCH_FILE_MB:-8}
POINT_MAX=${BENCH_POINT_MAX:-150}
MTFTPD_BIN=${MTFTPD_BIN:-/tmp/mtftpd-bench-peers}
CACHE=${BENCH_CACHE:-/var/cache/mtftpd-bench}
OUT=${BENCH_OUT:-$REPO/docs/benchmarks.md}
PNG=${OUT%.md}.png
# Points: PROFILE:CLIENTS:COUNT (downloads per client; a single client
# downloads 10 times so that its percentiles mean something). w64 is
# blksize 1468 + windowsize 64 (servers without windowsize answer lock-step);
# b512 is blksize 512, lock-step (the RFC 1350 default size).
POINTS=(${BENCH_POINTS:-bios:1:10 bios:10:1 bios:50:1 bios:200:1 w64:1:10 w64:10:1 w64:50:1 w64:200:1
  uefi:1:10 uefi:10:1 uefi:50:1 uefi:200:1 linux:10:1 b512:200:1 bios:500:1 uefi:500:1})
PLOT_PROFILES=(bios w64 uefi)

[[ "$FILE_MB" =~ ^[0-9]+$ ]] && [ "$FILE_MB" -ge 1 ] && [ "$FILE_MB" -le 1024 ] || die "BENCH_FILE_MB must be 1..1024"
[[ "$POINT_MAX" =~ ^[0-9]+$ ]] && [ "$POINT_MAX" -ge 5 ] && [ "$POINT_MAX" -le 3600 ] || die "BENCH_POINT_MAX must be 5..3600"
for p in "${POINTS[@]}"; do
  [[ "$p" =~ ^(bios|uefi|ipxe|linux|w64|b512):[0-9]+:[0-9]+$ ]] || die "BENCH_POINTS: bad point '$p' (PROFILE:CLIENTS:COUNT)"
done
for t in ip jq timeout sha256sum; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done

# ---------------------------------------------------------------- cleanup
WORK= SRV_PID= SAMPLER_PID=
at_exit '[ -z "$WORK" ] || rm -rf "$WORK"'
at_exit 'stop_pid "$SAMPLER_PID"; stop_pid "$SRV_PID"; cg_remove_all'

# ---------------------------------------------------------------- tools
build_mtftpd "$MTFTPD_BIN"
[ -n "$HPA_BIN" ] || warn "tftpd-hpa's in.tftpd not found (installed, or unpacked by scripts/test-deps.sh in $HPA_UNPACKED); skipping it"
fetch_atftpd
DNSMASQ=$(command -v dnsmasq || true)
[ -n "$DNSMASQ" ] || warn "dnsmasq not installed (apt-get install dnsmasq-base); skipping it"
if ! command -v gnuplot >/dev/null; then
  info "installing gnuplot-nox (Debian) for the plot"
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null 2>&1 || {
    timeout 300 apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends gnuplot-nox >/dev/null 2>&1 || true
  }
  command -v gnuplot >/dev/null || warn "gnuplot did not install; no plot"
fi

SERVERS=(mtftpd mtftpd-sp)
[ -n "$HPA_BIN" ] && SERVERS+=(tftpd-hpa)
[ -n "$ATFTPD_BIN" ] && SERVERS+=(atftpd)
[ -n "$DNSMASQ" ] && SERVERS+=(dnsmasq)

# ---------------------------------------------------------------- lab and file
# tmpfs: every server reads the file from memory; world-readable (in.tftpd
# drops to user tftp).
if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -n1)" -gt $((2 * FILE_MB * 1024)) ]; then
  WORK=$(mktemp -d /dev/shm/mtftpd-bench-peers.XXXXXX)
else
  WORK=$(mktemp -d /tmp/mtftpd-bench-peers.XXXXXX)
fi
chmod 755 "$WORK"
ROOT=$WORK/root
mkdir -p "$ROOT" && chmod 755 "$ROOT"
head -c $((FILE_MB * 1024 * 1024)) /dev/urandom >"$ROOT/f"
echo ready >"$ROOT/ready.txt"
chmod 644 "$ROOT/f" "$ROOT/ready.txt"
SUM=$(sha256sum "$ROOT/f" | cut -d' ' -f1)
STAMP=$(date +%Y%m%d-%H%M%S)
RAW=$REPO/bench-out/peers-$STAMP
mkdir -p "$RAW"

lab_up "$PREFIX" 1
# The swarm's source addresses (192.0.2.10-99) on the client's eth0.
for i in $(seq 10 99); do echo "addr add 192.0.2.$i/24 dev eth0"; done | ip -n "$CLI_NS" -batch - ||
  die "cannot add the source addresses to $CLI_NS"

# ---------------------------------------------------------------- servers
declare -A CMD_TEXT=()

# MTFTPD_ARGS: every mtftpd row. --tftp.max_unconfirmed{,_per_prefix}:
# the defaults (1,024, and 256 per /24: a /24 holds 254 machines) evict
# the oldest unanswered request when more than 256 clients of one /24 ask
# within one round trip, as the swarm's 500 clients (all in
# 192.0.2.0/24) do at the start of a point (docs/design.md, Single-port
# mode) — raised as the peers' session caps are below.
MTFTPD_ARGS=(serve --tftp.listen "$SRV_ADDR:69" --tftp.root "$ROOT" --log.format json
             --tftp.max_unconfirmed 1024 --tftp.max_unconfirmed_per_prefix 1024)
server_cmd() { # name -> SCMD array
  case $1 in
    mtftpd) SCMD=("$MTFTPD_BIN" "${MTFTPD_ARGS[@]}") ;;
    # mtftpd-sp: single-port mode (docs/design.md, Single-port mode): one
    # SO_REUSEPORT socket and event loop per core instead of a port and
    # goroutine per transfer.
    mtftpd-sp) SCMD=("$MTFTPD_BIN" "${MTFTPD_ARGS[@]}" --tftp.single_port true) ;;
    # mtftpd-frag: grants blksize 65464 (IP fragments) instead of capping
    # it at the MTU - 32, as the other servers do.
    mtftpd-frag) SCMD=("$MTFTPD_BIN" "${MTFTPD_ARGS[@]}" --tftp.allow_fragments true) ;;
    # --user nobody: an unpacked tftpd-hpa has no user tftp to drop to
    tftpd-hpa) SCMD=("$HPA_BIN" --foreground --listen --user nobody --address "$SRV_ADDR:69" --secure "$ROOT") ;;
    # --maxthread: the default 100 would refuse the 200-client points.
    atftpd) SCMD=("$ATFTPD_BIN" --daemon --no-fork --port 69 --bind-address "$SRV_ADDR" --maxthread 1024
                  --user root --group root --logfile /dev/null "$ROOT") ;;
    # TFTP only (--port=0: no DNS); --tftp-max: the default 50 would refuse
    # the 200-client points.
    dnsmasq) SCMD=("$DNSMASQ" --no-daemon --port=0 --enable-tftp "--tftp-root=$ROOT" --tftp-max=1024
                   --interface=eth0 --bind-interfaces --conf-file=/dev/null --user=root --group=root
                   "--pid-file=$WORK/dnsmasq.pid" "--log-facility=$WORK/dnsmasq.log") ;;
  esac
}

# bench ARGS... runs `mtftpd bench tftp` against the server in the client
# namespace, bounded by --max-time and by timeout(1).
bench() {
  ip netns exec "$CLI_NS" timeout $((POINT_MAX + 60)) "$MTFTPD_BIN" bench tftp --target "$SRV_ADDR:69" "$@"
}

SRV_CG=
start_server() { # name tag
  local name=$1 tag=$2 i log=$WORK/$1-$2.log
  server_cmd "$name"
  CMD_TEXT[$name]="ip netns exec $SRV_NS $(printf '%q ' "${SCMD[@]}" | sed "s#$WORK#\$WORK#g")"
  # a simple command, so $! is the server: ip netns exec execs it in place
  ip netns exec "$SRV_NS" "${SCMD[@]}" >"$log" 2>&1 </dev/null &
  SRV_PID=$!
  cg_attach "$name-$tag" "$SRV_PID"
  SRV_CG=$CG_LAST
  for i in $(seq 1 50); do
    kill -0 "$SRV_PID" 2>/dev/null || die "$name exited at start-up: $(tail -n 5 "$log")"
    bench --file ready.txt --timeout 200ms --retries 2 -q >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$name did not serve ready.txt within ~20 s: $(tail -n 5 "$log")"
}

server_pids() { # the server and its children (tftpd-hpa forks one per transfer)
  if [ -n "$SRV_CG" ]; then cat "$SRV_CG/cgroup.procs" 2>/dev/null; else
    echo "$SRV_PID"; ps -o pid= --ppid "$SRV_PID" 2>/dev/null || true
  fi
}

# sampler FILE: the peak of the summed RssAnon (KiB) of the server's
# processes, every 0.2 s until killed (or after POINT_MAX + 120 s).
sampler() {
  local out=$1 peak=0 cur n p
  for ((n = 0; n < (POINT_MAX + 120) * 5; n++)); do
    cur=0
    for p in $(server_pids); do
      cur=$((cur + $(status_kib RssAnon "$p")))
    done
    if [ "$cur" -gt "$peak" ]; then peak=$cur; echo "$peak" >"$out"; fi
    sleep 0.2
  done
}

# status_kib FIELD PID: a "FIELD: N kB" line of /proc/PID/status, 0 when gone
status_kib() { local v; v=$(sed -n "s/^$1:[[:space:]]*\([0-9]*\).*/\1/p" "/proc/$2/status" 2>/dev/null); echo "${v:-0}"; }

udp_drops() { # ns -> [InErrors, RcvbufErrors, SndbufErrors] (the Udp: lines of /proc/net/snmp)
  ip netns exec "$1" grep '^Udp:' /proc/net/snmp | jq -R -s -c 'split("\n") | map(split(" ")) |
    [.[0] | index("InErrors"), index("RcvbufErrors"), index("SndbufErrors")] as $i | [$i[] as $j | .[1][$j] | tonumber]'
}

# profile_args: the lock-step points (bios, ipxe, b512) run on the batch
# engine (`--engine batch`, docs/benchmarks.md "The batch engine"): the
# swarm shares the 2 cores with the server, and one goroutine and socket
# per client costs about as much CPU per block as the server, squeezing
# the ratio of two servers' throughputs towards 1. The windowed and
# probing profiles keep the goroutine engine (the batch engine plays
# lock-step only).
profile_args() { # profile -> PARGS array
  case $1 in
    w64) PARGS=(--profile custom --blksize 1468 --windowsize 64) ;;
    b512) PARGS=(--profile custom --blksize 512 --engine batch) ;;
    bios|ipxe) PARGS=(--profile "$1" --engine batch) ;;
    *) PARGS=(--profile "$1") ;;
  esac
}

# ---------------------------------------------------------------- points
START=$(date +%s)
: >"$WORK/points.jsonl"

# run_point SERVER PROFILE CLIENTS COUNT appends the point to points.jsonl:
# the bench tftp report and what was measured around it.
run_point() {
  local srv=$1 prof=$2 n=$3 count=$4 key="$1/$2/$3" tag json c0 c1 s0 s1 k0 k1 hwm rss rc sretx note=
  tag=$prof-$n
  json=$RAW/$srv-$tag.json
  start_server "$srv" "$tag"
  profile_args "$prof"
  s0=$(udp_drops "$SRV_NS") k0=$(udp_drops "$CLI_NS") c0=$(cg_cpu "$SRV_CG" "$SRV_PID")
  echo 0 >"$WORK/rss"
  sampler "$WORK/rss" &
  SAMPLER_PID=$!
  set +e
  bench --file f --clients "$n" --count "$count" "${PARGS[@]}" --source-addrs "$SOURCES" \
    --verify "sha256:$SUM" --max-time "${POINT_MAX}s" --json "$json" -q >"$RAW/$srv-$tag.txt" 2>&1
  rc=$?
  set -e
  sleep 0.3 # the server sees the last ACKs and finishes its sessions
  c1=$(cg_cpu "$SRV_CG" "$SRV_PID") s1=$(udp_drops "$SRV_NS") k1=$(udp_drops "$CLI_NS")
  hwm=$(status_kib VmHWM "$SRV_PID")
  stop_pid "$SAMPLER_PID"; SAMPLER_PID=
  rss=$(cat "$WORK/rss")
  stop_pid "$SRV_PID"; SRV_PID=
  cp "$WORK/$srv-$tag.log" "$RAW/$srv-$tag.server.log" 2>/dev/null || true
  # mtftpd logs each transfer (JSON) with its retransmitted blocks; null
  # for the peers
  sretx=$(jq -R 'fromjson? | .retransmits? | numbers' "$WORK/$srv-$tag.log" | jq -s 'if length > 0 then add else null end')
  if [ ! -s "$json" ]; then
    note="no report (bench exit $rc): $(tail -n 2 "$RAW/$srv-$tag.txt" | tr '\n' ' ')"
    warn "$key: $note"
    json=/dev/null
  fi
  jq -n -c --arg srv "$srv" --arg prof "$prof" --argjson n "$n" --slurpfile rep "$json" --arg note "$note" \
    --argjson c0 "$c0" --argjson c1 "$c1" --argjson rss "$rss" --argjson hwm "$hwm" \
    --argjson s0 "$s0" --argjson s1 "$s1" --argjson k0 "$k0" --argjson k1 "$k1" --argjson sretx "$sretx" '
    def delta(a; b): [range(3) as $i | b[$i] - a[$i]];
    {server: $srv, profile: $prof, clients: $n, report: ($rep[0] // null), server_cpu_seconds: ($c1 - $c0 | . * 100 | round / 100),
     peak_anon_rss_kib: $rss, vmhwm_kib: $hwm, srv_udp_drops: delta($s0; $s1), cli_udp_drops: delta($k0; $k1),
     server_retransmits: $sretx} + (if $note != "" then {note: $note} else {} end)' >>"$WORK/points.jsonl"
  [ -n "$note" ] || info "$key: $(jq -r '"\(.aggregate_mbps * 10 | round / 10) MB/s, p99 \(.transfer_ms.p99 | round) ms, \(.completed)/\(.transfers) done"' "$json")"
}

for point in "${POINTS[@]}"; do
  IFS=: read -r prof n count <<<"$point"
  servers=("${SERVERS[@]}")
  [ "$prof" = linux ] && servers=(mtftpd mtftpd-frag "${SERVERS[@]:1}")
  [ "$n" -gt 200 ] && servers=(mtftpd mtftpd-sp) # the memory point
  for srv in "${servers[@]}"; do
    run_point "$srv" "$prof" "$n" "$count"
  done
done
TFTP_SECONDS=$(( $(date +%s) - START ))

# ---------------------------------------------------------------- DHCP
echo null >"$WORK/dhcp.json"
if [ "${BENCH_NO_DHCP:-}" != 1 ]; then
  info "DHCP: scripts/bench-dhcp.sh"
  if BENCH_SKIP_BUILD=1 MTFTPD_BIN=$MTFTPD_BIN BENCH_CLIENTS=${BENCH_DHCP_CLIENTS:-3000} BENCH_JSON=$RAW/dhcp.json \
     timeout 900 bash "$REPO/scripts/bench-dhcp.sh" >/dev/null 2>"$WORK/dhcp.err"; then
    cp "$RAW/dhcp.json" "$WORK/dhcp.json"
  else
    warn "bench-dhcp.sh failed: $(tail -n 3 "$WORK/dhcp.err" | tr '\n' ' ')"
  fi
fi

# ---------------------------------------------------------------- report
points_of() { # profile -> the client counts of that profile's points
  local p
  for p in "${POINTS[@]}"; do [[ $p == "$1":* ]] && echo "$p" | cut -d: -f2; done
}

plot() {
  command -v gnuplot >/dev/null || return 0
  local prof srv col i=0 gp=$WORK/plot.gp
  for prof in "${PLOT_PROFILES[@]}"; do
    for srv in "${SERVERS[@]}"; do
      jq -r --arg s "$srv" --arg p "$prof" 'select(.server == $s and .profile == $p and .clients <= 200 and .report != null) |
        "\(.clients) \(.report.aggregate_mbps * 10 | round / 10) \(.report.transfer_ms.p99 | round)"' \
        "$WORK/points.jsonl" >"$WORK/plot-$prof-$srv.dat"
    done
  done
  {
    echo "set terminal pngcairo size 1400,$((420 * ${#PLOT_PROFILES[@]})) font ',10'"
    echo "set output '$PNG'"
    echo "set multiplot layout ${#PLOT_PROFILES[@]},2 title 'mtftpd vs peers: $FILE_MB MiB file, lab bridge, $(date -u +%Y-%m-%d)'"
    echo "set logscale x; set xrange [0.8:250]; set xtics (1, 10, 50, 200); set xlabel 'clients'; set grid; set key top left"
    for prof in "${PLOT_PROFILES[@]}"; do
      for col in 2 3; do
        if [ "$col" = 2 ]; then
          echo "unset logscale y; set ylabel 'aggregate MB/s'; set title '$prof: aggregate throughput'"
        else
          echo "set logscale y; set ylabel 'p99 download ms'; set title '$prof: p99 download time'"
        fi
        printf 'plot '
        i=0
        for srv in "${SERVERS[@]}"; do
          [ -s "$WORK/plot-$prof-$srv.dat" ] || continue
          [ "$i" -gt 0 ] && printf ', '
          printf "'%s' using 1:%s with linespoints lw 2 title '%s'" "$WORK/plot-$prof-$srv.dat" "$col" "$srv"
          i=$((i + 1))
        done
        [ "$i" -gt 0 ] || printf "1 title 'no data'"
        echo
      done
    done
    echo "unset multiplot"
  } >"$gp"
  gnuplot "$gp" || warn "gnuplot failed"
}

notes() { # the hand-written notes of the previous report, or a placeholder
  if [ -f "$OUT" ] && grep -q '^<!-- notes -->' "$OUT"; then
    sed -n '/^<!-- notes -->/,/^<!-- \/notes -->/p' "$OUT"
  else
    printf '%s\n' '<!-- notes -->' '## Reading the numbers' '' '(analysis of this run: kept across runs)' '<!-- /notes -->'
  fi
}

# run.json: everything the report shows; bench report peers renders it.
run_json() {
  local srv
  for srv in mtftpd mtftpd-sp mtftpd-frag tftpd-hpa atftpd dnsmasq; do
    if [ -n "${CMD_TEXT[$srv]:-}" ]; then echo "${CMD_TEXT[$srv]% }"; fi
  done >"$WORK/commands.txt"
  jq -n --argjson host "$(host_json)" --slurpfile points "$WORK/points.jsonl" --slurpfile dhcp "$WORK/dhcp.json" \
    --rawfile notes <(notes) --rawfile cmds "$WORK/commands.txt" \
    --arg date "$(date -u +%FT%TZ)" --argjson tftp_s "$TFTP_SECONDS" \
    --arg ver "$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown)" \
    --arg hpa "$(hpa_version)" \
    --arg atftpd "$(basename "$(ls -1 "$CACHE"/atftpd_*.deb 2>/dev/null | tail -n1)" .deb 2>/dev/null || echo n/a)" \
    --arg dnsmasq "$([ -n "$DNSMASQ" ] && "$DNSMASQ" --version | head -n1 | cut -d' ' -f3 || echo n/a)" \
    --arg prefix "$PREFIX" --arg srv_ns "$SRV_NS" --arg cli_ns "$CLI_NS" --arg srv_addr "$SRV_ADDR" --arg sources "$SOURCES" \
    --argjson file_mib "$FILE_MB" --arg sum "$SUM" --argjson point_max "$POINT_MAX" --arg plot "$(basename "$PNG")" '
    {date: $date, tftp_seconds: $tftp_s, host: $host, version: $ver, tftpd_hpa: $hpa, atftpd: $atftpd, dnsmasq: $dnsmasq,
     prefix: $prefix, srv_ns: $srv_ns, cli_ns: $cli_ns, srv_addr: $srv_addr, sources: $sources, file_mib: $file_mib,
     sha256: $sum, point_max_seconds: $point_max, plot: $plot, notes: ($notes | rtrimstr("\n")), points: $points,
     dhcp: $dhcp[0], commands: ($cmds | rtrimstr("\n") | split("\n"))}'
}

mkdir -p "$(dirname "$OUT")"
plot
run_json >"$RAW/run.json"
"$MTFTPD_BIN" bench report peers --in "$RAW/run.json" -o "$OUT" || die "bench report peers failed (the run is in $RAW/run.json)"
info "wrote $OUT$([ -f "$PNG" ] && echo " and $PNG"), raw reports in $RAW ($(( $(date +%s) - START )) s)"
