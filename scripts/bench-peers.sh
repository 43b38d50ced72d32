#!/usr/bin/env bash
# bench-peers.sh — mtftpd side by side with the servers people use today, in
# one run on this machine (`make bench-peers`):
#   TFTP   mtftpd vs tftpd-hpa (in.tftpd), atftpd and dnsmasq (TFTP only),
#          the same file and client profile for each, at 1, 10, 50 and 200
#          clients (`mtftpd bench tftp`), plus 10 clients at blksize 65464
#          and mtftpd alone at 500 clients (memory);
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
#   BENCH_SKIP_BUILD=1     use an existing $MTFTPD_BIN instead of building
#   MTFTPD_BIN=/tmp/mtftpd-bench-peers
#   BENCH_CACHE=/var/cache/mtftpd-bench   where the atftpd .deb is unpacked
#   BENCH_OUT=docs/benchmarks.md          the report (its plot: same name, .png)
#
# Results: BENCH_OUT (a section between <!-- notes --> and <!-- /notes --> is
# kept from the previous file), its PNG plot, and the raw JSON reports in
# bench-out/peers-YYYYmmdd-HHMMSS/.
set -euo pipefail

prog=bench-peers
die() { echo "$prog: FATAL: $*" >&2; exit 1; }
warn() { echo "$prog: warning: $*" >&2; }
info() { echo "$prog: $(date -u +%H:%M:%S) $*" >&2; }
usage() { sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 69)"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NETLAB=$REPO/scripts/netlab.sh
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
HPA_BIN=/usr/sbin/in.tftpd
# Points: PROFILE:CLIENTS:COUNT (downloads per client; a single client
# downloads 10 times so that its percentiles mean something). w64 is
# blksize 1468 + windowsize 64 (servers without windowsize answer lock-step).
POINTS=(${BENCH_POINTS:-bios:1:10 bios:10:1 bios:50:1 bios:200:1 w64:1:10 w64:10:1 w64:50:1 w64:200:1
  uefi:1:10 uefi:10:1 uefi:50:1 uefi:200:1 linux:10:1 uefi:500:1})
PLOT_PROFILES=(bios w64 uefi)

[[ "$FILE_MB" =~ ^[0-9]+$ ]] && [ "$FILE_MB" -ge 1 ] && [ "$FILE_MB" -le 1024 ] || die "BENCH_FILE_MB must be 1..1024"
[[ "$POINT_MAX" =~ ^[0-9]+$ ]] && [ "$POINT_MAX" -ge 5 ] && [ "$POINT_MAX" -le 3600 ] || die "BENCH_POINT_MAX must be 5..3600"
for p in "${POINTS[@]}"; do
  [[ "$p" =~ ^(bios|uefi|ipxe|linux|w64):[0-9]+:[0-9]+$ ]] || die "BENCH_POINTS: bad point '$p' (PROFILE:CLIENTS:COUNT)"
done
for t in ip jq timeout awk sha256sum; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done

# shellcheck source=scripts/bench-lib.sh
. "$REPO/scripts/bench-lib.sh"

# ---------------------------------------------------------------- cleanup
WORK= LAB_UP=0 SRV_PID= SAMPLER_PID=

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_pid "$SAMPLER_PID"
  stop_pid "$SRV_PID"
  cg_remove_all
  if [ "$LAB_UP" = 1 ]; then
    bash "$NETLAB" -p "$PREFIX" down >/dev/null 2>&1 || warn "netlab.sh -p $PREFIX down failed"
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
if [ "${BENCH_SKIP_BUILD:-}" = 1 ]; then
  [ -x "$MTFTPD_BIN" ] || die "BENCH_SKIP_BUILD=1 but $MTFTPD_BIN is missing"
else
  command -v go >/dev/null || die "go not found"
  info "building mtftpd -> $MTFTPD_BIN"
  (cd "$REPO" && CGO_ENABLED=0 timeout 600 go build -o "$MTFTPD_BIN" ./cmd/mtftpd) || die "go build ./cmd/mtftpd failed"
fi
[ -x "$HPA_BIN" ] || warn "tftpd-hpa ($HPA_BIN) not installed (apt-get install tftpd-hpa); skipping it"
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

SERVERS=(mtftpd)
[ -x "$HPA_BIN" ] && SERVERS+=(tftpd-hpa)
[ -n "$ATFTPD_BIN" ] && SERVERS+=(atftpd)
[ -n "$DNSMASQ" ] && SERVERS+=(dnsmasq)

# ---------------------------------------------------------------- lab and file
if ip netns list 2>/dev/null | awk '{print $1}' | grep -q "^$PREFIX-"; then
  die "namespaces $PREFIX-* exist already (another run, or a stale lab: scripts/netlab.sh -p $PREFIX down)"
fi
# tmpfs: every server reads the file from memory; world-readable (in.tftpd
# drops to user tftp).
if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt $((2 * FILE_MB * 1024)) ]; then
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

LAB_UP=1
bash "$NETLAB" -p "$PREFIX" up 1 >/dev/null || die "netlab.sh up failed"
# The swarm's source addresses (192.0.2.10-99) on the client's eth0.
for i in $(seq 10 99); do echo "addr add 192.0.2.$i/24 dev eth0"; done | ip -n "$CLI_NS" -batch - ||
  die "cannot add the source addresses to $CLI_NS"

# ---------------------------------------------------------------- servers
declare -A CMD_TEXT=()

server_cmd() { # name -> SCMD array
  case $1 in
    mtftpd) SCMD=("$MTFTPD_BIN" serve --tftp.listen "$SRV_ADDR:69" --tftp.root "$ROOT" --log.format json) ;;
    # mtftpd-frag: grants blksize 65464 (IP fragments) instead of capping
    # it at the MTU - 32, as the other servers do.
    mtftpd-frag) SCMD=("$MTFTPD_BIN" serve --tftp.listen "$SRV_ADDR:69" --tftp.root "$ROOT" --log.format json
                       --tftp.allow_fragments true) ;;
    tftpd-hpa) SCMD=("$HPA_BIN" --foreground --listen --address "$SRV_ADDR:69" --secure "$ROOT") ;;
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
      cur=$((cur + $(awk '/^RssAnon:/{print $2; f=1} END{if (!f) print 0}' "/proc/$p/status" 2>/dev/null || echo 0)))
    done
    if [ "$cur" -gt "$peak" ]; then peak=$cur; echo "$peak" >"$out"; fi
    sleep 0.2
  done
}

udp_drops() { # ns -> "InErrors RcvbufErrors SndbufErrors" (Udp: line of /proc/net/snmp)
  ip netns exec "$1" awk '/^Udp:/ { if (!h) { for (i = 2; i <= NF; i++) c[$i] = i; h = 1; next }
    print $c["InErrors"], $c["RcvbufErrors"], $c["SndbufErrors"] }' /proc/net/snmp
}

profile_args() { # profile -> PARGS array
  case $1 in
    w64) PARGS=(--profile custom --blksize 1468 --windowsize 64) ;;
    *) PARGS=(--profile "$1") ;;
  esac
}

# ---------------------------------------------------------------- points
declare -A ROW=() NOTE=()
START=$(date +%s)

run_point() { # server profile clients count
  local srv=$1 prof=$2 n=$3 count=$4 key="$1/$2/$3" tag json c0 c1 s0 s1 k0 k1 hwm rss rc sretx
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
  hwm=$(awk '/^VmHWM:/{print $2}' "/proc/$SRV_PID/status" 2>/dev/null || echo 0)
  stop_pid "$SAMPLER_PID"; SAMPLER_PID=
  rss=$(cat "$WORK/rss")
  stop_pid "$SRV_PID"; SRV_PID=
  cp "$WORK/$srv-$tag.log" "$RAW/$srv-$tag.server.log" 2>/dev/null || true
  # mtftpd logs each transfer with its retransmitted blocks
  sretx=$(awk 'match($0, /"retransmits":[0-9]+/) { n += substr($0, RSTART + 14, RLENGTH - 14); f = 1 }
    END { if (f) print n; else print "n/a" }' "$WORK/$srv-$tag.log")
  if [ ! -s "$json" ]; then
    NOTE[$key]="no report (bench exit $rc): $(tail -n 2 "$RAW/$srv-$tag.txt" | tr '\n' ' ')"
    warn "$key: ${NOTE[$key]}"
    return
  fi
  # aggregate p50 p95 p99 completed/transfers failed retrans timeouts cpu benchcpu rssMiB hwmMiB srvdrops clidrops negotiated errors serverretransmits
  ROW[$key]=$(jq -r --arg cpu "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b - a}')" \
      --arg sretx "$sretx" --arg rss "$(awk -v k="$rss" 'BEGIN{printf "%.1f", k / 1024}')" \
      --arg hwm "$(awk -v k="$hwm" 'BEGIN{printf "%.1f", k / 1024}')" \
      --arg sd "$(paste -d' ' <(echo "$s0") <(echo "$s1") | awk '{printf "%d/%d/%d", $4-$1, $5-$2, $6-$3}')" \
      --arg cd "$(paste -d' ' <(echo "$k0") <(echo "$k1") | awk '{printf "%d/%d/%d", $4-$1, $5-$2, $6-$3}')" '[
      (.aggregate_mbps * 10 | round / 10),
      (.transfer_ms.p50 | round), (.transfer_ms.p95 | round), (.transfer_ms.p99 | round),
      "\(.completed)/\(.transfers)",
      .failed, (.duplicates + .out_of_order), .timeouts,
      $cpu, (.client_cpu_seconds // 0 | . * 100 | round / 100), $rss, $hwm, $sd, $cd,
      (.negotiated | to_entries | map(.key) | join(" ")),
      (if .failed == 0 then "" else (.errors | to_entries | map("\(.key) \(.value)") | join(", ")) end)
      + (if .stopped then " (" + .stopped + ")" else "" end),
      $sretx
    ] | @tsv' "$json")
  info "$key: $(printf '%s' "${ROW[$key]}" | cut -f1) MB/s, p99 $(printf '%s' "${ROW[$key]}" | cut -f4) ms, $(printf '%s' "${ROW[$key]}" | cut -f5) done"
}

for point in "${POINTS[@]}"; do
  IFS=: read -r prof n count <<<"$point"
  servers=("${SERVERS[@]}")
  [ "$prof" = linux ] && servers=(mtftpd mtftpd-frag "${SERVERS[@]:1}")
  [ "$n" -gt 200 ] && servers=(mtftpd) # the memory point
  for srv in "${servers[@]}"; do
    run_point "$srv" "$prof" "$n" "$count"
  done
done
TFTP_SECONDS=$(( $(date +%s) - START ))

# ---------------------------------------------------------------- DHCP
DHCP_MD=
if [ "${BENCH_NO_DHCP:-}" != 1 ]; then
  info "DHCP: scripts/bench-dhcp.sh"
  if BENCH_SKIP_BUILD=1 MTFTPD_BIN=$MTFTPD_BIN BENCH_CLIENTS=${BENCH_DHCP_CLIENTS:-1000} \
     timeout 900 bash "$REPO/scripts/bench-dhcp.sh" >"$WORK/dhcp.md" 2>"$WORK/dhcp.err"; then
    DHCP_MD=$WORK/dhcp.md
  else
    warn "bench-dhcp.sh failed: $(tail -n 3 "$WORK/dhcp.err" | tr '\n' ' ')"
  fi
fi

# ---------------------------------------------------------------- report
field() { printf '%s' "${ROW[$1]:-}" | cut -f"$2"; }
ratio() { # a b -> a/b as "N.NN×", or n/a
  awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f×", a / b; else printf "n/a" }'
}
points_of() { # profile -> the client counts of that profile's points
  local p
  for p in "${POINTS[@]}"; do [[ $p == "$1":* ]] && echo "$p" | cut -d: -f2; done
}
servers_of() { # profile clients
  if [ "$2" -gt 200 ]; then echo mtftpd
  elif [ "$1" = linux ]; then printf '%s\n' mtftpd mtftpd-frag "${SERVERS[@]:1}"
  else printf '%s\n' "${SERVERS[@]}"; fi
}

profile_title() {
  case $1 in
    bios) echo "BIOS profile: RRQ blksize=1468, lock-step" ;;
    w64) echo "blksize 1468 + windowsize 64 (custom profile; servers without windowsize answer lock-step)" ;;
    uefi) echo "UEFI profile: tsize probe aborted with ERROR 8, then RRQ blksize=1468 windowsize=4" ;;
    ipxe) echo "iPXE profile: RRQ blksize=1432 tsize=0, lock-step" ;;
    linux) echo "linux profile: RRQ blksize=65464 windowsize=64" ;;
  esac
}

tftp_tables() {
  local prof n srv r key
  for prof in bios w64 uefi ipxe linux; do
    [ -n "$(points_of "$prof")" ] || continue
    echo "### $(profile_title "$prof")"
    echo
    echo "| clients | server | MB/s | mtftpd ÷ this | p50 ms | p95 ms | p99 ms | this ÷ mtftpd (p99) | done | failed | retransmits seen | server retransmits | client timeouts | server CPU s | bench CPU s | peak anon RSS MiB | VmHWM MiB | srv UDP drops | client UDP drops | blksize/window | errors |"
    echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|---|"
    for n in $(points_of "$prof"); do
      for srv in $(servers_of "$prof" "$n"); do
        key=$srv/$prof/$n
        r=${ROW[$key]:-}
        if [ -z "$r" ]; then
          echo "| $n | $srv | ${NOTE[$key]:-not run} | | | | | | | | | | | | | | | | | | |"
          continue
        fi
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
          "$n" "$srv" "$(field "$key" 1)" \
          "$(ratio "$(field "mtftpd/$prof/$n" 1)" "$(field "$key" 1)")" \
          "$(field "$key" 2)" "$(field "$key" 3)" "$(field "$key" 4)" \
          "$(ratio "$(field "$key" 4)" "$(field "mtftpd/$prof/$n" 4)")" \
          "$(field "$key" 5)" "$(field "$key" 6)" "$(field "$key" 7)" "$(field "$key" 17)" "$(field "$key" 8)" \
          "$(field "$key" 9)" "$(field "$key" 10)" "$(field "$key" 11)" "$(field "$key" 12)" \
          "$(field "$key" 13)" "$(field "$key" 14)" "$(field "$key" 15)" "$(field "$key" 16)"
      done
    done
    echo
  done
}

compass() {
  local a b rss limit d1 d2
  echo "| compass (issue 7) | target | measured |"
  echo "|---|---|---|"
  echo "| 1 client, blksize 1468 + windowsize 64: mtftpd ÷ atftpd | ≥ 3× | $(ratio "$(field mtftpd/w64/1 1)" "$(field atftpd/w64/1 1)") ($(field mtftpd/w64/1 1) vs $(field atftpd/w64/1 1) MB/s) |"
  echo "| 50 clients (1468 + window 64) aggregate: mtftpd ÷ tftpd-hpa | ≥ 2× | $(ratio "$(field mtftpd/w64/50 1)" "$(field tftpd-hpa/w64/50 1)") ($(field mtftpd/w64/50 1) vs $(field tftpd-hpa/w64/50 1) MB/s) |"
  echo "| 50 BIOS-profile clients: mtftpd ÷ tftpd-hpa | ≥ 2× | $(ratio "$(field mtftpd/bios/50 1)" "$(field tftpd-hpa/bios/50 1)") ($(field mtftpd/bios/50 1) vs $(field tftpd-hpa/bios/50 1) MB/s) |"
  echo "| 10 clients asking 65464 + window 64: no collapse | mtftpd ≫ atftpd's ~11 MB/s | mtftpd $(field mtftpd/linux/10 1) MB/s ($(field mtftpd/linux/10 15)), mtftpd-frag $(field mtftpd-frag/linux/10 1) MB/s ($(field mtftpd-frag/linux/10 15)), atftpd $(field atftpd/linux/10 1), tftpd-hpa $(field tftpd-hpa/linux/10 1), dnsmasq $(field dnsmasq/linux/10 1) MB/s |"
  rss=$(field mtftpd/uefi/500 11)
  limit=$(awk 'BEGIN{printf "%.1f", 64 + 500 * 20 / 1024}')
  echo "| 500 UEFI clients: mtftpd peak anon RSS | ≤ 64 MiB + 20 KiB × 500 = $limit MiB | ${rss:-n/a} MiB (VmHWM $(field mtftpd/uefi/500 12) MiB; $(field mtftpd/uefi/500 5) done, $(field mtftpd/uefi/500 1) MB/s) |"
  if [ -n "$DHCP_MD" ]; then
    d1=$(awk -F'|' '/^\| *20 *\| .*×/{gsub(/ /, "", $3); print $3; exit}' "$DHCP_MD")
    d2=$(awk -F'|' '/^\| *100 *\| .*×/{gsub(/ /, "", $3); print $3; exit}' "$DHCP_MD")
    echo "| DHCP exchanges/s: mtftpd ÷ dnsmasq | ≥ 3× | ${d1:-n/a} at 20 concurrent, ${d2:-n/a} at 100 (table below) |"
  fi
}

plot() {
  command -v gnuplot >/dev/null || return 0
  local prof n srv col i=0 gp=$WORK/plot.gp
  for prof in "${PLOT_PROFILES[@]}"; do
    for srv in "${SERVERS[@]}"; do
      : >"$WORK/plot-$prof-$srv.dat"
      for n in $(points_of "$prof"); do
        [ "$n" -le 200 ] || continue
        [ -n "${ROW[$srv/$prof/$n]:-}" ] || continue
        echo "$n $(field "$srv/$prof/$n" 1) $(field "$srv/$prof/$n" 4)" >>"$WORK/plot-$prof-$srv.dat"
      done
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

report() {
  local srv
  echo "# mtftpd side by side: TFTP and DHCP peers"
  echo
  echo "Generated by \`make bench-peers\` (scripts/bench-peers.sh); the notes section is written by hand and kept across runs."
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); TFTP part took $TFTP_SECONDS s"
  echo "- kernel: $(uname -r); CPU: $(lscpu 2>/dev/null | awk -F: '/^Model name/{gsub(/^ +/, "", $2); print $2; exit}') ($(nproc) CPUs, shared with other work: figures are noisy, ratios within one run are what counts)"
  echo "- mtftpd: $(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown) (defaults; mtftpd-frag adds \`--tftp.allow_fragments true\`)"
  echo "- tftpd-hpa: $(dpkg-query -W -f='${Version}' tftpd-hpa 2>/dev/null || echo n/a); atftpd: $(basename "$(ls -1 "$CACHE"/atftpd_*.deb 2>/dev/null | tail -n1)" .deb 2>/dev/null || echo n/a) (unpacked, --maxthread 1024); dnsmasq: $([ -n "$DNSMASQ" ] && "$DNSMASQ" --version | head -n1 | awk '{print $3}' || echo n/a) (TFTP only, --tftp-max=1024)"
  echo "- lab: scripts/netlab.sh -p $PREFIX up 1: server namespace $SRV_NS ($SRV_ADDR:69) and client namespace $CLI_NS on a Linux bridge (veth, MTU 1500); the swarm's clients are spread over the $SOURCES addresses of $CLI_NS; every server started fresh for each point and alone"
  echo "- file: $FILE_MB MiB of random data on tmpfs (sha256 $SUM); every download verified"
  echo "- per point: \`mtftpd bench tftp\` ($CLI_NS), all clients at once, COUNT downloads each (10 for one client, else 1); MB/s = payload bytes received by all clients / wall time of the point;" \
       "p50/p95/p99 = per-download time; retransmits seen = duplicate + out-of-order DATA blocks at the clients; server retransmits = blocks mtftpd sent again (its transfer log; n/a for the peers);" \
       "server CPU = cpuacct cgroup of the server (forked children included); bench CPU = CPU of the \`mtftpd bench\` process itself (near wall time × 2 cores: the load generator is the limit); peak anon RSS = the highest sum of RssAnon over the server's processes, sampled every 0.2 s; VmHWM = peak RSS of the main server process (file pages of the served file included);" \
       "UDP drops = InErrors/RcvbufErrors/SndbufErrors deltas of /proc/net/snmp in the server and client namespaces"
  echo
  echo "![aggregate throughput and p99 against clients]($(basename "$PNG"))"
  echo
  echo "## Compass numbers (one run, ratios)"
  echo
  compass
  echo
  notes
  echo
  echo "## TFTP"
  echo
  tftp_tables
  echo "## DHCP (scripts/bench-dhcp.sh, run right after)"
  echo
  if [ -n "$DHCP_MD" ]; then
    # its own title becomes a note; its sections move one level down
    sed '1{/^# /d}' "$DHCP_MD" | sed 's/^## /### /'
  else
    echo "not run (BENCH_NO_DHCP=1 or bench-dhcp.sh failed)"
  fi
  echo
  echo "## Multicast"
  echo
  echo "Measured by \`make bench-mcast\` (scripts/bench-mcast.sh: mtftpd's native dialect against udpcast, RFC 2090 against atftpd, a tbf-limited server port); its last report is [benchmarks-mcast.md](benchmarks-mcast.md)."
  echo
  echo "## Commands"
  echo
  echo "\$WORK is a temp dir on tmpfs; PROFILE ARGS: bios \`--profile bios\`, uefi \`--profile uefi\`, linux \`--profile linux\`, w64 \`--profile custom --blksize 1468 --windowsize 64\`."
  echo
  echo '```'
  echo "bash scripts/netlab.sh -p $PREFIX up 1"
  echo "for i in \$(seq 10 99); do echo \"addr add 192.0.2.\$i/24 dev eth0\"; done | ip -n $CLI_NS -batch -"
  for srv in mtftpd mtftpd-frag tftpd-hpa atftpd dnsmasq; do
    if [ -n "${CMD_TEXT[$srv]:-}" ]; then echo "${CMD_TEXT[$srv]% }"; fi
  done
  echo "ip netns exec $CLI_NS mtftpd bench tftp --target $SRV_ADDR:69 --file f --clients N --count COUNT PROFILE-ARGS --source-addrs $SOURCES --verify sha256:$SUM --max-time ${POINT_MAX}s --json SERVER-PROFILE-N.json -q"
  echo '```'
}

plot
report >"$WORK/report.md"
mkdir -p "$(dirname "$OUT")"
mv "$WORK/report.md" "$OUT"
info "wrote $OUT$([ -f "$PNG" ] && echo " and $PNG"), raw reports in $RAW ($(( $(date +%s) - START )) s)"
