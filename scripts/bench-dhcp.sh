#!/usr/bin/env bash
# bench-dhcp.sh — DHCP storm: 3000 clients doing DISCOVER/OFFER/REQUEST/ACK
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
# 3000 clients cycle through it. Each (server, concurrency) pair gets a fresh
# server and an empty lease file. Nothing runs or is sent outside the lab,
# which is removed on exit. Needs root.
#
# Environment:
#   BENCH_CLIENTS=3000           clients per storm (1..100000); fewer make a
#                                storm of mtftpd or Kea last a fraction of a
#                                second, where start-up costs and 10 ms CPU
#                                ticks weigh
#   BENCH_CONCURRENCY="1 20 100" concurrency levels
#   BENCH_BUDGET=480             seconds; runs that would start later are skipped
#   BENCH_SKIP_BUILD=1           use an existing $MTFTPD_BIN instead of building
#   MTFTPD_BIN=/tmp/mtftpd-bench-dhcp
#   BENCH_NO_KEA=1               do not try Kea (no apt-get install either)
#   BENCH_JSON=FILE              also write the run's JSON here
#   MTFTPD_BASE_BIN=PATH         also run this mtftpd binary, as row "mtftpd-base"
#   MTFTPD_BASE_ENV="K=V ..."    run the mtftpd-base row with this environment
#                                (e.g. GOMAXPROCS=1); with it alone, mtftpd-base
#                                is $MTFTPD_BIN
#                                (a before/after comparison in one run)
#   BENCH_SERVERS="mtftpd kea"   run only these rows
#   BENCH_POOL=192.0.0.0/16      mtftpd's subnet (the only one allowed: it holds
#                                192.0.2.1), range 192.0.3.0-192.0.255.250 (64,763
#                                addresses) for a big BENCH_CLIENTS; dnsmasq and
#                                Kea keep the /24
#
# Each row also records the server's peak RSS (VmHWM of its process).
#
# Results: the run as JSON in bench-out/dhcp-YYYYmmdd-HHMMSS.json, rendered
# by `mtftpd bench report dhcp` as markdown on stdout and in the same name
# with .md.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, port 67/68)"

REPO=$BENCH_REPO
PREFIX=mtdb
SRV_NS=$PREFIX-srv CLI_NS=$PREFIX-c1
CLIENTS=${BENCH_CLIENTS:-3000}
read -r -a CONCS <<<"${BENCH_CONCURRENCY:-1 20 100}"
BUDGET=${BENCH_BUDGET:-480}
MTFTPD_BIN=${MTFTPD_BIN:-/tmp/mtftpd-bench-dhcp}
# STORM_ENV: the storm shares the two cores with the server, and one P
# spares it the Go scheduler's wake-ups between its reader and its
# clients; in one pair of runs its CPU per exchange fell by a quarter and
# every server went faster (docs/dhcp-leases.md, "Measured"). The run's
# JSON records it.
STORM_ENV=GOMAXPROCS=1
RANGE_START=192.0.2.10 RANGE_END=192.0.2.250
STORM_DURATION=120   # mtftpd bench --duration: each storm stops by itself
STORM_TIMEOUT=150    # ...and is killed if it does not
MT_PREFIX=192.0.2.0/24 MT_RANGE_START=$RANGE_START MT_RANGE_END=$RANGE_END
if [ -n "${BENCH_POOL:-}" ]; then
  # the one /16 that holds the server's 192.0.2.1; the range skips
  # 192.0.0.0-192.0.2.255 so that it never holds the server's own address
  [ "$BENCH_POOL" = 192.0.0.0/16 ] || die "BENCH_POOL: only 192.0.0.0/16 (it holds the server's 192.0.2.1)"
  MT_PREFIX=$BENCH_POOL MT_RANGE_START=192.0.3.0 MT_RANGE_END=192.0.255.250
fi

[[ "$CLIENTS" =~ ^[0-9]+$ ]] && [ "$CLIENTS" -ge 1 ] && [ "$CLIENTS" -le 100000 ] || die "BENCH_CLIENTS must be 1..100000"
[[ "$BUDGET" =~ ^[0-9]+$ ]] && [ "$BUDGET" -le 3600 ] || die "BENCH_BUDGET must be 0..3600"
[ "${#CONCS[@]}" -ge 1 ] && [ "${#CONCS[@]}" -le 10 ] || die "BENCH_CONCURRENCY: 1 to 10 levels"
for c in "${CONCS[@]}"; do
  [[ "$c" =~ ^[0-9]+$ ]] && [ "$c" -ge 1 ] && [ "$c" -le 1000 ] || die "BENCH_CONCURRENCY: '$c' is not 1..1000"
done
[[ "${MTFTPD_BASE_ENV:-}" != *$'\n'* ]] || die "MTFTPD_BASE_ENV: one line of NAME=VALUE words"
read -r -a BASE_ENV <<<"${MTFTPD_BASE_ENV:-}"
for kv in "${BASE_ENV[@]}"; do
  [[ "$kv" =~ ^[A-Z_][A-Z0-9_]*=[^[:space:]]*$ ]] || die "MTFTPD_BASE_ENV: '$kv' is not NAME=VALUE"
done
for t in ip jq timeout bash; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done

# ---------------------------------------------------------------- cleanup
WORK=
declare -a SRV_PIDS=()

stop_servers() {
  local pid
  for pid in "${SRV_PIDS[@]}"; do stop_pid "$pid"; done
  SRV_PIDS=()
}
at_exit '[ -z "$WORK" ] || rm -rf "$WORK"'
at_exit 'stop_servers'

# ---------------------------------------------------------------- peers
build_mtftpd "$MTFTPD_BIN"

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
[ -n "$DNSMASQ" ] && SERVERS+=(dnsmasq dnsmasq-noping)
[ -n "$KEA" ] && SERVERS+=(kea)
if [ "${#BASE_ENV[@]}" -gt 0 ] && [ -z "${MTFTPD_BASE_BIN:-}" ]; then
  MTFTPD_BASE_BIN=$MTFTPD_BIN
fi
if [ -n "${MTFTPD_BASE_BIN:-}" ]; then
  [ -x "$MTFTPD_BASE_BIN" ] || die "MTFTPD_BASE_BIN=$MTFTPD_BASE_BIN is not an executable"
  SERVERS+=(mtftpd-base)
fi
if [ -n "${BENCH_SERVERS:-}" ]; then
  declare -a picked=()
  for name in "${SERVERS[@]}"; do
    case " $BENCH_SERVERS " in *" $name "*) picked+=("$name") ;; esac
  done
  [ "${#picked[@]}" -ge 1 ] || die "BENCH_SERVERS=$BENCH_SERVERS names none of: ${SERVERS[*]}"
  SERVERS=("${picked[@]}")
fi

# ---------------------------------------------------------------- lab
# Lease files on disk, not tmpfs: every server's fsync costs what it costs.
WORK=$(mktemp -d /var/tmp/mtftpd-bench-dhcp.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/tftp"
lab_up "$PREFIX" 1 --no-addr
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
lease_file = "$WORK/$name-$tag.leases"

[[dhcp.subnet]]
prefix = "$MT_PREFIX"
range = "$MT_RANGE_START-$MT_RANGE_END"
lease_time = "1h"
EOF
      local bin=$MTFTPD_BIN
      # the Go runtime's settings of whoever runs this script do not
      # reach the server unrecorded; the base row gets MTFTPD_BASE_ENV
      SCMD=(env -u GOMAXPROCS -u GOGC -u GOMEMLIMIT -u GODEBUG)
      if [ "$name" = mtftpd-base ]; then
        bin=$MTFTPD_BASE_BIN
        SCMD+=("${BASE_ENV[@]}")
      fi
      SCMD+=("$bin" serve --config "$WORK/$name-$tag.toml" --log.format json --log.level info) ;;
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
start=$(date +%s)
: >"$WORK/rows.jsonl"

# run_one NAME CONC appends the storm's row to rows.jsonl: its bench dhcp
# report and the server's peak RSS, or a note why there is none.
run_one() {
  local name=$1 conc=$2 tag=c$2 json txt rc note='' rss=null cpu=null cpu0
  if [ $(( $(date +%s) - start )) -ge "$BUDGET" ]; then
    note="skipped: time budget of ${BUDGET}s used up"
  else
    start_server "$name" "$tag"
    json=$WORK/$name-$tag.json txt=$WORK/$name-$tag.txt
    cpu0=$(cg_cpu "" "${SRV_PIDS[0]}" 2>/dev/null || true)
    set +e
    ip netns exec "$CLI_NS" env "$STORM_ENV" timeout "$STORM_TIMEOUT" "$MTFTPD_BIN" bench dhcp --iface eth0 \
      --clients "$CLIENTS" --concurrency "$conc" --release --duration "${STORM_DURATION}s" --json "$json" >"$txt" 2>&1
    rc=$?
    set -e
    sleep 0.5 # the last RELEASEs reach the server and its lease file
    cpu=$(awk -v a="$cpu0" -v b="$(cg_cpu "" "${SRV_PIDS[0]}" 2>/dev/null || echo)" 'BEGIN { if (b != "" && a != "") printf "%.2f", b - a }')
    [ -n "$cpu" ] || cpu=null
    # VmHWM: the server's peak resident set (ip netns exec and env exec
    # the server in place, so the pid is the server's)
    rss=$(awk '/^VmHWM:/ { printf "%.1f", $2 / 1024 }' "/proc/${SRV_PIDS[0]}/status" 2>/dev/null || true)
    [ -n "$rss" ] || rss=null
    stop_servers
    [ -s "$json" ] || note="no report (bench exit $rc): $(tail -n 3 "$txt" | tr '\n' ' ')"
  fi
  if [ -n "$note" ]; then
    warn "$name concurrency $conc: $note"
    json=/dev/null
  else
    info "$name concurrency $conc: $(jq '.exchanges_per_sec * 10 | round / 10' "$json") exchanges/s"
  fi
  jq -n -c --arg s "$name" --argjson c "$conc" --slurpfile r "$json" --arg note "$note" --argjson rss "$rss" --argjson cpu "$cpu" \
    '{server: $s, concurrency: $c, report: ($r[0] // null)} + (if $rss != null then {peak_rss_mib: $rss} else {} end)
     + (if $cpu != null then {server_cpu_seconds: $cpu} else {} end)
     + (if $note != "" then {note: $note} else {} end)' >>"$WORK/rows.jsonl"
}

# by concurrency, then server: the rows compared in a ratio run close
# together in time, on a machine whose load drifts
for conc in "${CONCS[@]}"; do
  for name in "${SERVERS[@]}"; do
    run_one "$name" "$conc"
  done
done

# ---------------------------------------------------------------- report
# start-up and shut-down lines of dnsmasq and Kea, left out of the notes
QUIET_LOG='started\|compile time options\|DHCP, IP range\|DHCP, sockets bound\|reading /etc\|exiting on receipt\|shutdown\|MULTI_THREADING_INFO'

# log_note TITLE LINES...: one {title, lines} of the report's server logs.
log_note() { local t=$1; shift; jq -n -c --arg t "$t" '{title: $t, lines: $ARGS.positional}' --args "$@"; }

server_notes() { # interesting lines of each server log, as JSON lines
  local f n
  for f in "$WORK"/mtftpd-c*.log "$WORK"/mtftpd-base-c*.log; do
    [ -e "$f" ] || continue
    n=$(grep -c '"level":"\(warn\|error\)"' "$f" || true)
    if [ "$n" -gt 0 ]; then
      mapfile -t lines < <(grep '"level":"\(warn\|error\)"' "$f" | head -n 5)
      log_note "- mtftpd $(basename "$f" .log): $n warn/error lines, first 5:" "${lines[@]}"
    fi
  done
  for f in "$WORK"/dnsmasq*-c*.daemon.log "$WORK"/kea-c*.daemon.log; do
    [ -e "$f" ] || continue
    n=$(grep -civ "$QUIET_LOG" "$f" || true)
    if [ "$n" -gt 0 ]; then
      mapfile -t lines < <(grep -iv "$QUIET_LOG" "$f" | head -n 5)
      log_note "- $(basename "$f" .daemon.log): $n log lines besides start-up and shut-down, first 5:" "${lines[@]}"
    fi
  done
}

# run.json: everything the report shows; bench report dhcp renders it.
run_json() {
  local name
  for name in "${SERVERS[@]}"; do
    if [ -n "${CMD_TEXT[$name]:-}" ]; then echo "${CMD_TEXT[$name]% }"; fi
  done >"$WORK/commands.txt"
  jq -n --argjson host "$(host_json)" --slurpfile rows "$WORK/rows.jsonl" --slurpfile logs <(server_notes) \
    --rawfile cmds "$WORK/commands.txt" --arg date "$(date -u +%FT%TZ)" \
    --arg ver "$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown)" \
    --arg dnsmasq "$([ -n "$DNSMASQ" ] && "$DNSMASQ" --version | head -n1 | cut -d' ' -f3 || echo 'not installed')" \
    --arg kea "$([ -n "$KEA" ] && "$KEA" -v 2>/dev/null || echo 'not installed')" \
    --argjson clients "$CLIENTS" --arg concs "${CONCS[*]}" --arg servers "${SERVERS[*]}" \
    --arg srv_ns "$SRV_NS" --arg cli_ns "$CLI_NS" --arg rs "$RANGE_START" --arg re "$RANGE_END" \
    --arg dev "$(df --output=source "$WORK" | tail -n1)" --argjson dur "$STORM_DURATION" --arg storm_env "$STORM_ENV" \
    --arg base "${MTFTPD_BASE_BIN:-}${MTFTPD_BASE_ENV:+, environment $MTFTPD_BASE_ENV}" --arg mtpool "$MT_PREFIX, $MT_RANGE_START-$MT_RANGE_END" '
    {date: $date, host: $host, version: $ver, dnsmasq: $dnsmasq, kea: $kea, clients: $clients,
     concurrency: ($concs | split(" ") | map(tonumber)), servers: ($servers | split(" ")),
     srv_ns: $srv_ns, cli_ns: $cli_ns, range_start: $rs, range_end: $re, lease_device: $dev,
     storm_duration_seconds: $dur, storm_env: $storm_env, rows: $rows, logs: $logs,
     commands: ($cmds | rtrimstr("\n") | split("\n"))}
    + (if $base != "" then {mtftpd_base: $base} else {} end)
    + (if $mtpool != "192.0.2.0/24, \($rs)-\($re)" then {mtftpd_pool: $mtpool} else {} end)'
}

mkdir -p "$REPO/bench-out"
out=$REPO/bench-out/dhcp-$(date +%Y%m%d-%H%M%S)
run_json >"$out.json"
[ -z "${BENCH_JSON:-}" ] || cp "$out.json" "$BENCH_JSON"
"$MTFTPD_BIN" bench report dhcp --in "$out.json" -o "$out.md" || die "bench report dhcp failed (the run is in $out.json)"
cat "$out.md"
info "wrote $out.md in $(( $(date +%s) - start )) s"
