#!/usr/bin/env bash
# bench-dhcp.sh — DHCP storm: 1000 clients doing DISCOVER/OFFER/REQUEST/ACK
# + RELEASE (`mtftpd bench dhcp`) against mtftpd (server mode), dnsmasq (as
# configured by default, and with --no-ping) and, if it installs from Debian,
# Kea (memfile), at 1, 20 and 100 concurrent clients. Every server persists
# its leases to a file on disk.
#
#   scripts/bench-dhcp.sh
#
# Runs in a fresh namespace lab (scripts/netlab.sh -p mtdb up 1 --no-addr):
# the servers in mtdb-srv (eth0 192.0.2.1/24), the storm in mtdb-c1 (eth0, no
# address). The pool is 192.0.2.10-192.0.2.250 (241 addresses): RELEASE lets
# 1000 clients cycle through it. Each (server, concurrency) pair gets a fresh
# server and an empty lease file. Nothing runs or is sent outside the lab,
# which is removed on exit. Needs root.
#
# Environment:
#   BENCH_CLIENTS=1000           clients per storm (1..100000)
#   BENCH_CONCURRENCY="1 20 100" concurrency levels
#   BENCH_BUDGET=480             seconds; runs that would start later are skipped
#   BENCH_SKIP_BUILD=1           use an existing $MTFTPD_BIN instead of building
#   MTFTPD_BIN=/tmp/mtftpd-bench-dhcp
#   BENCH_NO_KEA=1               do not try Kea (no apt-get install either)
#   MTFTPD_BASE_BIN=PATH         also run this mtftpd binary, as row "mtftpd-base"
#                                (a before/after comparison in one run)
#   BENCH_SERVERS="mtftpd kea"   run only these rows
#   BENCH_POOL=192.0.0.0/16      mtftpd's subnet (must hold 192.0.2.1), its range
#                                from .0.10 to .255.250: a big pool (dnsmasq and Kea
#                                keep the /24)
#
# Results: markdown on stdout and in bench-out/dhcp-YYYYmmdd-HHMMSS.md.
set -euo pipefail

prog=bench-dhcp
die() { echo "$prog: FATAL: $*" >&2; exit 1; }
warn() { echo "$prog: warning: $*" >&2; }
info() { echo "$prog: $*" >&2; }
usage() { sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; }

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 67/68)"

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NETLAB=$REPO/scripts/netlab.sh
PREFIX=mtdb
SRV_NS=$PREFIX-srv CLI_NS=$PREFIX-c1
CLIENTS=${BENCH_CLIENTS:-1000}
read -r -a CONCS <<<"${BENCH_CONCURRENCY:-1 20 100}"
BUDGET=${BENCH_BUDGET:-480}
MTFTPD_BIN=${MTFTPD_BIN:-/tmp/mtftpd-bench-dhcp}
RANGE_START=192.0.2.10 RANGE_END=192.0.2.250
MT_PREFIX=192.0.2.0/24 MT_RANGE_START=$RANGE_START MT_RANGE_END=$RANGE_END
if [ -n "${BENCH_POOL:-}" ]; then
  [[ "$BENCH_POOL" =~ ^([0-9]+)\.([0-9]+)\.0\.0/16$ ]] || die "BENCH_POOL must be A.B.0.0/16"
  MT_PREFIX=$BENCH_POOL
  MT_RANGE_START=${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.0.10 MT_RANGE_END=${BASH_REMATCH[1]}.${BASH_REMATCH[2]}.255.250
fi
STORM_DURATION=120   # mtftpd bench --duration: each storm stops by itself
STORM_TIMEOUT=150    # ...and is killed if it does not

[[ "$CLIENTS" =~ ^[0-9]+$ ]] && [ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 100000 ] || die "BENCH_CLIENTS must be 1..100000"
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -le 3600 ] || die "BENCH_BUDGET must be 0..3600"
[ "${#CONCS[@]}" -ge 1 ] && [ "${#CONCS[@]}" -le 10 ] || die "BENCH_CONCURRENCY: 1 to 10 levels"
for c in "${CONCS[@]}"; do
  [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] && [ "$c" -le 1000 ] || die "BENCH_CONCURRENCY: '$c' is not 1..1000"
done
for t in ip jq timeout bash; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done

# ---------------------------------------------------------------- cleanup
WORK= LAB_UP=0
declare -a SRV_PIDS=()

# stop_pid
# shellcheck source=scripts/bench-lib.sh
. "$REPO/scripts/bench-lib.sh"

stop_servers() {
  local pid
  for pid in "${SRV_PIDS[@]}"; do stop_pid "$pid"; done
  SRV_PIDS=()
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_servers
  if [ "$LAB_UP" = 1 ]; then
    bash "$NETLAB" -p "$PREFIX" down >/dev/null 2>&1 || warn "netlab.sh -p $PREFIX down failed"
  fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- peers
if [ "${BENCH_SKIP_BUILD:-}" = 1 ]; then
  [ -x "$MTFTPD_BIN" ] || die "BENCH_SKIP_BUILD=1 but $MTFTPD_BIN is missing"
else
  command -v go >/dev/null || die "go not found"
  info "building mtftpd -> $MTFTPD_BIN"
  (cd "$REPO" && CGO_ENABLED=0 timeout 600 go build -o "$MTFTPD_BIN" ./cmd/mtftpd) || die "go build ./cmd/mtftpd failed"
fi

DNSMASQ=$(command -v dnsmasq || true)
[ -n "$DNSMASQ" ] || warn "dnsmasq not installed (apt-get install dnsmasq-base); skipping it"

KEA=$(command -v kea-dhcp4 || true)
if [ -z "$KEA" ] && [ "${BENCH_NO_KEA:-}" != 1 ]; then
  info "installing kea-dhcp4-server (Debian; optional)"
  if ! DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends kea-dhcp4-server >/dev/null 2>&1; then
    timeout 300 apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -q --no-install-recommends kea-dhcp4-server >/dev/null 2>&1 || true
  fi
  KEA=$(command -v kea-dhcp4 || true)
  [ -n "$KEA" ] || warn "kea-dhcp4-server did not install; skipping Kea"
fi
[ "${BENCH_NO_KEA:-}" = 1 ] && KEA=

SERVERS=(mtftpd)
if [ -n "${MTFTPD_BASE_BIN:-}" ]; then
  [ -x "$MTFTPD_BASE_BIN" ] || die "MTFTPD_BASE_BIN=$MTFTPD_BASE_BIN is not an executable"
  SERVERS+=(mtftpd-base)
fi
[ -n "$DNSMASQ" ] && SERVERS+=(dnsmasq dnsmasq-noping)
[ -n "$KEA" ] && SERVERS+=(kea)
if [ -n "${BENCH_SERVERS:-}" ]; then
  declare -a picked=()
  for name in "${SERVERS[@]}"; do
    case " $BENCH_SERVERS " in *" $name "*) picked+=("$name") ;; esac
  done
  [ "${#picked[@]}" -ge 1 ] || die "BENCH_SERVERS=$BENCH_SERVERS names none of: ${SERVERS[*]}"
  SERVERS=("${picked[@]}")
fi

# ---------------------------------------------------------------- lab
if ip netns list 2>/dev/null | awk '{print $1}' | grep -q "^$PREFIX-"; then
  die "namespaces $PREFIX-* exist already (another run, or a stale lab: scripts/netlab.sh -p $PREFIX down)"
fi
# Lease files on disk, not tmpfs: every server's fsync costs what it costs.
WORK=$(mktemp -d /var/tmp/mtftpd-bench-dhcp.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/tftp"
LAB_UP=1
bash "$NETLAB" -p "$PREFIX" up 1 --no-addr >/dev/null || die "netlab.sh up failed"
ip -n "$CLI_NS" -4 addr show dev eth0 | grep -q inet && die "$CLI_NS eth0 has an address; want none"

# ---------------------------------------------------------------- servers
declare -A CMD_TEXT=()

server_cmd() { # name tag -> SCMD array, writes its config
  local name=$1 tag=$2
  case $name in
    mtftpd|mtftpd-base)
      cat >"$WORK/$name-$tag.toml" <<EOF
[tftp]
listen = "192.0.2.1:69"
root = "$WORK/tftp"

[dhcp]
mode = "server"
interfaces = ["eth0"]
lease_file = "$WORK/$name-$tag.leases.json"

[[dhcp.subnet]]
prefix = "$MT_PREFIX"
range = "$MT_RANGE_START-$MT_RANGE_END"
lease_time = "1h"
EOF
      local bin=$MTFTPD_BIN
      [ "$name" = mtftpd-base ] && bin=$MTFTPD_BASE_BIN
      SCMD=("$bin" serve --config "$WORK/$name-$tag.toml" --log.format json --log.level info) ;;
    dnsmasq|dnsmasq-noping)
      # --quiet-dhcp: no log line per packet (mtftpd and Kea log none
      # either); --conf-file=/dev/null: not /etc/dnsmasq.conf. By default
      # dnsmasq pings an address before offering it and blocks for up to
      # 3 s while no echo comes back (always, here: the client has no
      # address yet); the -noping row turns that off.
      SCMD=("$DNSMASQ" --no-daemon --port=0 --interface=eth0 --bind-interfaces
            "--dhcp-range=$RANGE_START,$RANGE_END,1h" "--dhcp-leasefile=$WORK/$name-$tag.leases"
            --dhcp-authoritative --conf-file=/dev/null "--pid-file=$WORK/$name-$tag.pid"
            --user=root --group=root --quiet-dhcp "--log-facility=$WORK/$name-$tag.daemon.log")
      if [ "$name" = dnsmasq-noping ]; then SCMD+=(--no-ping); fi ;;
    kea)
      # eth0/192.0.2.1: the lab's server also holds 198.51.100.1, and
      # Kea opens one raw socket per address, so it would see (and answer)
      # every broadcast twice (DHCPSRV_MULTIPLE_RAW_SOCKETS_PER_IFACE).
      cat >"$WORK/kea-$tag.json" <<EOF
{ "Dhcp4": {
  "interfaces-config": { "interfaces": [ "eth0/192.0.2.1" ], "dhcp-socket-type": "raw" },
  "lease-database": { "type": "memfile", "persist": true, "name": "$WORK/kea-$tag.leases.csv", "lfc-interval": 0 },
  "valid-lifetime": 3600,
  "subnet4": [ { "id": 1, "subnet": "192.0.2.0/24", "pools": [ { "pool": "$RANGE_START - $RANGE_END" } ] } ],
  "loggers": [ { "name": "kea-dhcp4", "output_options": [ { "output": "$WORK/kea-$tag.daemon.log" } ], "severity": "WARN" } ]
} }
EOF
      SCMD=(env "KEA_LOCKFILE_DIR=$WORK" "KEA_PIDFILE_DIR=$WORK" "$KEA" -c "$WORK/kea-$tag.json") ;;
  esac
}

probe() { # one client, RELEASE: is the server answering?
  ip netns exec "$CLI_NS" timeout 10 "$MTFTPD_BIN" bench dhcp --iface eth0 --clients 1 --release \
    --timeout 2s --duration 5s >/dev/null 2>&1
}

start_server() { # name tag
  local name=$1 tag=$2 pid i log=$WORK/$1-$2.log
  server_cmd "$name" "$tag"
  CMD_TEXT[$name]="ip netns exec $SRV_NS $(printf '%q ' "${SCMD[@]}" | sed "s#$WORK#\$WORK#g")"
  # a simple command, so $! is the server: ip netns exec execs it in place
  ip netns exec "$SRV_NS" "${SCMD[@]}" >"$log" 2>&1 </dev/null &
  pid=$!
  SRV_PIDS+=("$pid")
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start-up: $(tail -n 5 "$log")"
    probe && return 0
    sleep 0.3
  done
  die "$name did not answer a DHCP probe within ~30 s: $(tail -n 5 "$log")"
}

# ---------------------------------------------------------------- runs
declare -A ROW=() NOTE=()
start=$(date +%s)

run_one() { # name conc
  local name=$1 conc=$2 tag=c$2 json txt rc
  if [ $(( $(date +%s) - start )) -ge "$BUDGET" ]; then
    NOTE[$name/$conc]="skipped: time budget of ${BUDGET}s used up"
    warn "$name concurrency $conc: ${NOTE[$name/$conc]}"
    return
  fi
  start_server "$name" "$tag"
  json=$WORK/$name-$tag.json txt=$WORK/$name-$tag.txt
  set +e
  ip netns exec "$CLI_NS" timeout "$STORM_TIMEOUT" "$MTFTPD_BIN" bench dhcp --iface eth0 \
    --clients "$CLIENTS" --concurrency "$conc" --release --duration "${STORM_DURATION}s" --json "$json" >"$txt" 2>&1
  rc=$?
  set -e
  sleep 0.5 # the last RELEASEs reach the server and its lease file
  local rss
  rss=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/${SRV_PIDS[0]}/status" 2>/dev/null || true)
  stop_servers
  if [ ! -s "$json" ]; then
    NOTE[$name/$conc]="no report (bench exit $rc): $(tail -n 3 "$txt" | tr '\n' ' ')"
    warn "$name concurrency $conc: ${NOTE[$name/$conc]}"
    return
  fi
  ROW[$name/$conc]=$(jq -r --arg rss "${rss:-n/a}" '[
      (.exchanges_per_sec | . * 10 | round / 10),
      (.latency_ms.p50 | . * 100 | round / 100),
      (.latency_ms.p99 | . * 100 | round / 100),
      "\(.completed)/\(.clients)",
      (if .failed == 0 then "0" else "\(.failed) (" + (.failures | to_entries | map("\(.key) \(.value)") | join(", ")) + ")" end),
      .naks,
      .duplicate_offers, .duplicate_acks, .retransmits, $rss
    ] | @tsv' "$json")
  info "$name concurrency $conc: $(printf '%s' "${ROW[$name/$conc]}" | cut -f1) exchanges/s"
}

for name in "${SERVERS[@]}"; do
  for conc in "${CONCS[@]}"; do
    run_one "$name" "$conc"
  done
done

# ---------------------------------------------------------------- report
field() { printf '%s' "${ROW[$1]:-}" | cut -f"$2"; }
ratio() { # a b
  awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f×", a / b; else printf "n/a" }'
}

# start-up and shut-down lines of dnsmasq and Kea, left out of the notes
QUIET_LOG='started\|compile time options\|DHCP, IP range\|DHCP, sockets bound\|reading /etc\|exiting on receipt\|shutdown\|MULTI_THREADING_INFO'

server_notes() { # interesting lines of each server log
  local f n
  for f in "$WORK"/mtftpd-c*.log "$WORK"/mtftpd-base-c*.log; do
    [ -e "$f" ] || continue
    n=$(grep -c '"level":"\(warn\|error\)"' "$f" || true)
    if [ "$n" -gt 0 ]; then
      echo "- mtftpd $(basename "$f" .log): $n warn/error lines, first 5:"
      echo
      echo '```'
      grep '"level":"\(warn\|error\)"' "$f" | head -n 5
      echo '```'
    fi
  done
  for f in "$WORK"/dnsmasq*-c*.daemon.log "$WORK"/kea-c*.daemon.log; do
    [ -e "$f" ] || continue
    n=$(grep -civ "$QUIET_LOG" "$f" || true)
    if [ "$n" -gt 0 ]; then
      echo "- $(basename "$f" .daemon.log): $n log lines besides start-up and shut-down, first 5:"
      echo
      echo '```'
      grep -iv "$QUIET_LOG" "$f" | head -n 5
      echo '```'
    fi
  done
}

report() {
  local name conc r
  echo "# DHCP storm: mtftpd vs dnsmasq vs Kea"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- kernel: $(uname -r); CPU: $(lscpu 2>/dev/null | awk -F: '/^Model name/{gsub(/^ +/, "", $2); print $2; exit}') ($(nproc) CPUs)"
  echo "- mtftpd: $(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown) (server mode, lease_file, fsync before each ACK)"
  echo "- dnsmasq: $([ -n "$DNSMASQ" ] && "$DNSMASQ" --version | head -n1 | awk '{print $3}' || echo 'not installed') (--dhcp-leasefile, --quiet-dhcp; dnsmasq-noping adds --no-ping)"
  echo "- Kea: $([ -n "$KEA" ] && "$KEA" -v 2>/dev/null || echo 'not installed') (memfile, persist, lfc-interval 0, raw socket on eth0/192.0.2.1)"
  echo "- storm: \`mtftpd bench dhcp --iface eth0 --clients $CLIENTS --concurrency C --release\` in $CLI_NS (no address) against $SRV_NS (192.0.2.1) over the lab bridge;" \
       "pool $RANGE_START-$RANGE_END (241 addresses; mtftpd: $MT_PREFIX, $MT_RANGE_START-$MT_RANGE_END), lease 1 h, a fresh server and lease file (on $(df -P "$WORK" | awk 'NR==2{print $1}'), not tmpfs) per row;" \
       "retransmission after 1 s, at most 4 times per step, 10 s per exchange"
  echo "- exchanges/s = ACKed exchanges / wall time of the storm; latency = first DISCOVER sent → ACK received;" \
       "dup offers = OFFERs of an address another client still held (offered or leased); dup ACKs = two live leases on one address (a server bug)"
  echo
  echo "| server | concurrency | exchanges/s | p50 ms | p99 ms | completed | failures | NAKs | dup offers | dup ACKs | retransmits | server peak RSS MiB |"
  echo "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|"
  for name in "${SERVERS[@]}"; do
    for conc in "${CONCS[@]}"; do
      r=${ROW[$name/$conc]:-}
      if [ -n "$r" ]; then
        printf '| %s | %s | %s |\n' "$name" "$conc" "$(printf '%s' "$r" | sed 's/\t/ | /g')"
      else
        printf '| %s | %s | %s | | | | | | | | | |\n' "$name" "$conc" "${NOTE[$name/$conc]:-n/a}"
      fi
    done
  done
  echo
  echo "| concurrency | mtftpd/dnsmasq | mtftpd/dnsmasq --no-ping | mtftpd/Kea | mtftpd-base/Kea |"
  echo "|---:|---:|---:|---:|---:|"
  for conc in "${CONCS[@]}"; do
    echo "| $conc | $(ratio "$(field mtftpd/$conc 1)" "$(field dnsmasq/$conc 1)") | $(ratio "$(field mtftpd/$conc 1)" "$(field dnsmasq-noping/$conc 1)") | $(ratio "$(field mtftpd/$conc 1)" "$(field kea/$conc 1)") | $(ratio "$(field mtftpd-base/$conc 1)" "$(field kea/$conc 1)") |"
  done
  echo
  echo "(ratios of exchanges/s)"
  echo
  local notes; notes=$(server_notes)
  if [ -n "$notes" ]; then
    echo "Server logs:"
    echo
    echo "$notes"
    echo
  fi
  echo "Commands (\$WORK is a temp dir; C = concurrency):"
  echo
  echo '```'
  for name in "${SERVERS[@]}"; do
    if [ -n "${CMD_TEXT[$name]:-}" ]; then echo "${CMD_TEXT[$name]% }"; fi
  done
  echo "ip netns exec $CLI_NS mtftpd bench dhcp --iface eth0 --clients $CLIENTS --concurrency C --release --duration ${STORM_DURATION}s --json \$WORK/SERVER-cC.json"
  echo '```'
}

mkdir -p "$REPO/bench-out"
md=$REPO/bench-out/dhcp-$(date +%Y%m%d-%H%M%S).md
report | tee "$md"
info "wrote $md in $(( $(date +%s) - start )) s"
