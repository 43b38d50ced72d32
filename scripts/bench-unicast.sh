#!/usr/bin/env bash
# bench-unicast.sh — single-client download throughput of a 64 MiB file,
# mtftpd vs tftpd-hpa vs atftpd, measured in the same run (called by
# `make bench`).
#
#   scripts/bench-unicast.sh [--loopback | --netns | --both]
#
# --loopback  servers and client on 127.0.0.1 in the current namespace
# --netns     server and client in a namespace lab of their own
#             (scripts/netlab.sh -p ub<pid> up 1: 192.0.2.1 in ub<pid>-srv,
#             192.0.2.101 in ub<pid>-c1, a bridge between), removed at exit;
#             nothing touches real interfaces or the root namespace's sysctls
# default     --both when root, else --loopback
#
# Clients: atftp (blksize 1468 + windowsize 64; blksize 65464) and curl
# (default blksize 512; --tftp-blksize 1468). Each server x client pair gets
# one warm-up and BENCH_RUNS timed runs; every output is checked by sha256 and
# a mismatch (or client failure/timeout) aborts with a non-zero exit.
#
# Environment:
#   BENCH_RUNS=5          timed runs per pair (1..20)
#   BENCH_CURL_RUNS=3     the same for the curl rows (lock-step, slow)
#   BENCH_NETNS_MTU=1500  MTU of the lab's links in --netns mode
#   BENCH_SKIP_BUILD=1    use an existing $MTFTPD_BIN instead of building
#   BENCH_MTFTPD_FLAGS="--tftp.allow_fragments true"   extra flags for mtftpd serve
#                         ("--tftp.single_port true": single-port mode)
#   BENCH_CONFIGS="atftp-65464"   only these client configurations (of the CONFIGS below)
#   MTFTPD_BIN=/tmp/mtftpd-bench
#   BENCH_CACHE=/var/cache/mtftpd-bench   where the atftpd .deb is unpacked
#   BENCH_FAULT=sha       test hook: corrupt the first download (must fail)
#
# Results: the run as JSON in bench-out/unicast-YYYYmmdd-HHMMSS.json,
# rendered by `mtftpd bench report unicast` as markdown on stdout and in the
# same name with .md.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

mode=
case "${1:-}" in
  --loopback) mode=loopback ;;
  --netns) mode=netns ;;
  --both) mode=both ;;
  -h|--help) usage; exit 0 ;;
  "") if [ "$(id -u)" = 0 ]; then mode=both; else mode=loopback; fi ;;
  *) usage >&2; exit 2 ;;
esac
if [ "$mode" != loopback ] && [ "$(id -u)" != 0 ]; then
  die "--netns needs root (ip netns)"
fi

REPO=$BENCH_REPO
RUNS=${BENCH_RUNS:-5}
CURL_RUNS=${BENCH_CURL_RUNS:-3}
for v in "$RUNS" "$CURL_RUNS"; do
  [[ "$v" =~ ^[0-9]+$ ]] && [ "$v" -ge 1 ] && [ "$v" -le 20 ] || die "BENCH_RUNS and BENCH_CURL_RUNS must be 1..20"
done
NETNS_MTU=${BENCH_NETNS_MTU:-1500}
MTFTPD_BIN=${MTFTPD_BIN:-/tmp/mtftpd-bench}
CACHE=${BENCH_CACHE:-/var/cache/mtftpd-bench}
FAULT=${BENCH_FAULT:-}
SIZE=$((64 * 1024 * 1024))
FILE=f64
CLIENT_TIMEOUT=120
PORT_mtftpd=16969
PORT_tftpd_hpa=16970
PORT_atftpd=16971
SERVERS=(mtftpd tftpd-hpa atftpd)
read -r -a CONFIGS <<<"${BENCH_CONFIGS:-atftp-1468-w64 atftp-65464 curl-512 curl-1468}"
for c in "${CONFIGS[@]}"; do
  [[ "$c" =~ ^(atftp-1468-w64|atftp-65464|curl-512|curl-1468)$ ]] || die "BENCH_CONFIGS: unknown configuration '$c'"
done

for t in atftp curl ip sha256sum jq ss timeout; do
  command -v "$t" >/dev/null || die "missing tool: $t (scripts/test-deps.sh installs the clients)"
done

# ---------------------------------------------------------------- cleanup
WORK=
declare -a SRV_PIDS=()     # every server we started
declare -A PID_OF=() CG_OF=()

kill_pid_tree() { # pid: TERM the server and its direct children, bounded wait, then KILL
  local pid=$1 kids i
  kill -0 "$pid" 2>/dev/null || return 0
  kids=$(ps -o pid= --ppid "$pid" 2>/dev/null || true)
  kill -TERM "$pid" $kids 2>/dev/null || true
  for i in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" $kids 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

stop_servers() {
  local pid
  for pid in "${SRV_PIDS[@]}"; do kill_pid_tree "$pid"; done
  SRV_PIDS=()
  cg_remove_all
  PID_OF=() CG_OF=()
}

at_exit '[ -z "$WORK" ] || rm -rf "$WORK"'
at_exit 'stop_servers'

# ---------------------------------------------------------------- peers
ATFTPD_BIN=

server_cpu() { # name -> CPU seconds used so far
  cg_cpu "${CG_OF[$1]:-}" "${PID_OF[$1]}"
}

# ---------------------------------------------------------------- servers
SRV_NS= CLI_NS= ADDR=
declare -A CMD_TEXT=()
in_cli_ns() { if [ -n "$CLI_NS" ]; then ip netns exec "$CLI_NS" "$@"; else "$@"; fi; }
port_of() { local v=PORT_${1//-/_}; echo "${!v}"; }
available() {
  case $1 in
    mtftpd) return 0 ;;
    tftpd-hpa) [ -n "$HPA_BIN" ] ;;
    atftpd) [ -n "$ATFTPD_BIN" ] ;;
  esac
}

server_cmd() { # name -> SCMD array
  local port; port=$(port_of "$1")
  case $1 in
    mtftpd) SCMD=("$MTFTPD_BIN" serve --tftp.listen "$ADDR:$port" --tftp.root "$ROOTDIR"
                  --log.level info --log.format json --tftp.shutdown_grace 1s ${BENCH_MTFTPD_FLAGS:-}) ;;
    # as root, in.tftpd drops to user tftp: ROOTDIR and the file are world-readable
    # --user nobody: an unpacked tftpd-hpa has no user tftp to drop to
    tftpd-hpa) SCMD=("$HPA_BIN" --foreground --listen --user nobody --address "$ADDR:$port" --secure "$ROOTDIR") ;;
    atftpd) SCMD=("$ATFTPD_BIN" --daemon --no-fork --port "$port" --bind-address "$ADDR"
                  --user root --group root --logfile /dev/null "$ROOTDIR") ;;
  esac
}

start_server() { # name phase
  local name=$1 phase=$2 port pid i log
  port=$(port_of "$name")
  if [ -z "$SRV_NS" ] && [ -n "$(ss -Huan "sport = :$port" 2>/dev/null)" ]; then
    die "UDP port $port is already in use on this host"
  fi
  server_cmd "$name"
  log=$WORK/$name-$phase.log
  CMD_TEXT[$phase/$name]="${SRV_NS:+ip netns exec $SRV_NS }$(printf '%q ' "${SCMD[@]}")"
  # a simple command (not a function) so that $! is the server itself:
  # ip netns exec execs it in place
  local pfx=(); [ -n "$SRV_NS" ] && pfx=(ip netns exec "$SRV_NS")
  "${pfx[@]}" "${SCMD[@]}" >"$log" 2>&1 </dev/null &
  pid=$!
  SRV_PIDS+=("$pid")
  PID_OF[$name]=$pid
  cg_attach "$name-$phase" "$pid"
  CG_OF[$name]=$CG_LAST
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || die "$name exited at start-up: $(tail -n 5 "$log")"
    rm -f "$OUTDIR/ready"
    if in_cli_ns timeout 2 curl -sS -o "$OUTDIR/ready" "tftp://$ADDR:$port/ready.txt" >/dev/null 2>&1 &&
       cmp -s "$OUTDIR/ready" "$ROOTDIR/ready.txt"; then
      return 0
    fi
    sleep 0.2
  done
  die "$name on $ADDR:$port did not serve ready.txt within ~20 s: $(tail -n 5 "$log")"
}

# ---------------------------------------------------------------- clients
client_cmd() { # config port out -> CCMD array
  local cfg=$1 port=$2 out=$3
  case $cfg in
    atftp-1468-w64) CCMD=(atftp --option "blksize 1468" --option "windowsize 64" -g -r "$FILE" -l "$out" "$ADDR" "$port") ;;
    atftp-65464) CCMD=(atftp --option "blksize 65464" -g -r "$FILE" -l "$out" "$ADDR" "$port") ;;
    curl-512) CCMD=(curl -sS -o "$out" "tftp://$ADDR:$port/$FILE") ;;
    curl-1468) CCMD=(curl -sS --tftp-blksize 1468 -o "$out" "tftp://$ADDR:$port/$FILE") ;;
  esac
}

declare -A TIMES=() CPUS=()

run_pair() { # phase server config
  local phase=$1 srv=$2 cfg=$3 port out clog i t0 t1 rc got c0 c1 mark=0 log
  port=$(port_of "$srv")
  out=$OUTDIR/$FILE.out
  clog=$WORK/client.log
  client_cmd "$cfg" PORT "$out"
  CMD_TEXT[$phase/client/$cfg]="${CLI_NS:+ip netns exec $CLI_NS }timeout $CLIENT_TIMEOUT $(printf '%q ' "${CCMD[@]}")"
  client_cmd "$cfg" "$port" "$out"
  log=$WORK/mtftpd-$phase.log
  local n=$RUNS; [[ $cfg == curl-* ]] && n=$CURL_RUNS
  for i in $(seq 0 "$n"); do   # run 0 is the warm-up (verified, not timed)
    if [ "$srv" = mtftpd ] && [ "$i" = 1 ]; then sleep 0.3; mark=$(wc -l <"$log"); fi
    rm -f "$out"
    c0=$(server_cpu "$srv")
    t0=$(date +%s.%N)
    set +e
    in_cli_ns timeout "$CLIENT_TIMEOUT" "${CCMD[@]}" >"$clog" 2>&1 </dev/null
    rc=$?
    set -e
    t1=$(date +%s.%N)
    sleep 0.3   # let the server see the last ACK / reap, then read its CPU
    c1=$(server_cpu "$srv")
    if [ "$rc" != 0 ]; then
      [ "$rc" = 124 ] && rc="124 (timed out after ${CLIENT_TIMEOUT}s)"
      die "$phase: $cfg against $srv run $i failed, exit $rc: $(tail -n 5 "$clog" | tr '\n' ' ')"
    fi
    if [ "$FAULT" = sha ]; then printf 'X' | dd of="$out" bs=1 seek=1000 conv=notrunc 2>/dev/null; FAULT=; fi
    got=$(sha256sum "$out" 2>/dev/null | cut -d' ' -f1 || true)
    if [ "$got" != "$WANT" ]; then
      die "SHA256 MISMATCH: $phase: $cfg against $srv run $i: got ${got:-<no file>} ($(stat -c %s "$out" 2>/dev/null || echo 0) bytes), want $WANT"
    fi
    [ "$i" = 0 ] && continue
    TIMES[$phase/$srv/$cfg]+="$t0,$t1 "
    CPUS[$phase/$srv/$cfg]+="$c0,$c1 "
  done
  jq -n -c --arg p "$phase" --arg s "$srv" --arg c "$cfg" --arg t "${TIMES[$phase/$srv/$cfg]}" --arg u "${CPUS[$phase/$srv/$cfg]}" '
    def deltas: rtrimstr(" ") | split(" ") | map(split(",") | map(tonumber) | .[1] - .[0]);
    {phase: $p, server: $s, config: $c, wall: ($t | deltas), cpu: ($u | deltas)}' >>"$WORK/results.jsonl"
  info "$phase $srv $cfg: $(jq -r --arg p "$phase" --arg s "$srv" --arg c "$cfg" \
    'select(.phase == $p and .server == $s and .config == $c) | .wall | map(. * 10000 | round / 10000 | tostring) | join(" ")' "$WORK/results.jsonl") s"
  if [ "$srv" = mtftpd ]; then
    # mtftpd's transfer lines (JSON) of the timed runs: negotiated options
    # and datagrams per send syscall
    tail -n +"$((mark + 1))" "$log" | jq -R -c --arg p "$phase" --arg c "$cfg" 'fromjson? | select(.message? == "transfer") |
      {phase: $p, config: $c, blksize: (.blksize // 0), windowsize: (.windowsize // 0), datagrams, syscalls}' >>"$WORK/transfers.jsonl"
  fi
}

# ---------------------------------------------------------------- phases
run_phase() { # phase
  local phase=$1 srv cfg
  for srv in "${SERVERS[@]}"; do
    available "$srv" && start_server "$srv" "$phase"
  done
  for cfg in "${CONFIGS[@]}"; do
    for srv in "${SERVERS[@]}"; do
      available "$srv" && run_pair "$phase" "$srv" "$cfg"
    done
  done
  stop_servers
}

# setup_netns: the lab (netlab.sh: server namespace, client namespace, a
# bridge between; nothing in the root namespace), with the links' MTU set
# and the socket-buffer sysctls raised inside the lab's namespaces where
# they are per-namespace on this kernel. The root namespace's are read,
# never written.
setup_netns() {
  local root_vals ns k v dev
  LAB=ub$$
  SRV_NS=$LAB-srv CLI_NS=$LAB-c1
  lab_up "$LAB" 1
  ADDR=192.0.2.1
  if [ "$NETNS_MTU" != 1500 ]; then
    for dev in p-srv p-c1; do ip -n "$LAB-sw" link set "$dev" mtu "$NETNS_MTU" || die "cannot set the MTU of $dev"; done
    ip -n "$LAB-sw" link set br0 mtu "$NETNS_MTU" || die "cannot set the MTU of br0"
    for ns in "$SRV_NS" "$CLI_NS"; do ip -n "$ns" link set eth0 mtu "$NETNS_MTU" || die "cannot set the MTU of eth0 in $ns"; done
  fi
  root_vals=$(sysctl -n net.core.rmem_max net.core.wmem_max net.core.rmem_default net.core.wmem_default | paste -sd' ')
  # Per-namespace (hence safe to write) only where a child namespace has
  # the file and may write it: older kernels do not show it there at all,
  # 6.x shows it read-only, mirroring the root's.
  if ! ip netns exec "$SRV_NS" test -e /proc/sys/net/core/rmem_max; then
    NETNS_SYSCTL="not changed: net.core.*mem_* are not per-namespace on this kernel (root: rmem_max wmem_max rmem_default wmem_default = $root_vals)"
  elif ! ip netns exec "$SRV_NS" test -w /proc/sys/net/core/rmem_max; then
    NETNS_SYSCTL="not changed: net.core.*mem_* are read-only in child namespaces on this kernel and mirror the root namespace (rmem_max wmem_max rmem_default wmem_default = $root_vals)"
  else
    for ns in "$SRV_NS" "$CLI_NS"; do
      for k in rmem_max=16777216 wmem_max=16777216 rmem_default=4194304 wmem_default=4194304; do
        v=${k#*=} k=${k%%=*}
        ip netns exec "$ns" sh -c "echo $v > /proc/sys/net/core/$k" || die "cannot set net.core.$k in $ns"
      done
    done
    [ "$(sysctl -n net.core.rmem_max net.core.wmem_max net.core.rmem_default net.core.wmem_default | paste -sd' ')" = "$root_vals" ] ||
      die "net.core.*mem_* turned out to be global on this kernel: the root namespace's were $root_vals (restore them by hand)"
    NETNS_SYSCTL="in both namespaces: net.core.rmem_max=wmem_max=16777216, rmem_default=wmem_default=4194304 (per-netns on this kernel; root namespace untouched: $root_vals)"
  fi
  ip -n "$CLI_NS" route get "$ADDR" | grep -q 'dev eth0' || die "the lab is not set up as expected"
}

teardown_netns() {
  bash "$NETLAB" -p "$LAB" down >/dev/null 2>&1 || warn "netlab.sh -p $LAB down failed"
  SRV_NS= CLI_NS=
}

# ---------------------------------------------------------------- report
# phase_json PHASE TITLE: one phase of run.json.
phase_json() {
  local phase=$1 srv cfg
  for srv in "${SERVERS[@]}"; do
    [ -n "${CMD_TEXT[$phase/$srv]:-}" ] && echo "${CMD_TEXT[$phase/$srv]% }"
  done >"$WORK/scmds.txt"
  for cfg in "${CONFIGS[@]}"; do
    [ -n "${CMD_TEXT[$phase/client/$cfg]:-}" ] && echo "${CMD_TEXT[$phase/client/$cfg]% }   # $cfg"
  done >"$WORK/ccmds.txt"
  jq -n --arg p "$phase" --arg title "$2" --arg sysctl "${3:-}" --slurpfile r "$WORK/results.jsonl" --slurpfile t "$WORK/transfers.jsonl" \
    --rawfile sc "$WORK/scmds.txt" --rawfile cc "$WORK/ccmds.txt" '
    def lines: rtrimstr("\n") | if . == "" then [] else split("\n") end;
    {name: $p, title: $title, results: [$r[] | select(.phase == $p) | del(.phase)],
     mtftpd_transfers: [$t[] | select(.phase == $p) | del(.phase)],
     server_commands: ($sc | lines), client_commands: ($cc | lines)} + (if $sysctl != "" then {sysctl: $sysctl} else {} end)'
}

run_json() {
  local phase
  for phase in "${PHASES_RUN[@]}"; do
    case $phase in
      loopback) phase_json loopback "loopback (127.0.0.1, root namespace, default socket-buffer sysctls)" ;;
      netns) phase_json netns "netns (scripts/netlab.sh -p $LAB up 1: server $LAB-srv 192.0.2.1 <-bridge, mtu $NETNS_MTU-> client $LAB-c1 192.0.2.101)" "$NETNS_SYSCTL" ;;
    esac
  done | jq -n --argjson host "$(host_json)" --arg date "$(date -u +%FT%TZ)" \
    --arg ver "$(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown)" --arg bin "$MTFTPD_BIN" \
    --arg hpa "$(hpa_version)" --arg atftpd "$(basename "$(ls -1 "$CACHE"/atftpd_*.deb 2>/dev/null | tail -n1)" 2>/dev/null || echo n/a)" \
    --arg root "$CACHE/atftpd-root" --arg atftp "$(dpkg-query -W -f='${Version}' atftp 2>/dev/null || echo '?')" \
    --arg curl "$(curl --version | head -n1 | cut -d' ' -f1-2)" --argjson size "$SIZE" --arg sum "$WANT" \
    --argjson runs "$RUNS" --argjson curl_runs "$CURL_RUNS" --arg cg "$CG_KIND" \
    --arg ports "$PORT_mtftpd mtftpd, $PORT_tftpd_hpa tftpd-hpa, $PORT_atftpd atftpd" \
    --arg servers "${SERVERS[*]}" --arg configs "${CONFIGS[*]}" '
    {date: $date, host: $host, version: $ver, bin: $bin, tftpd_hpa: $hpa, atftpd: $atftpd, atftpd_root: $root,
     atftp: $atftp, curl: $curl, size: $size, sha256: $sum, runs: $runs, curl_runs: $curl_runs, cg_kind: $cg,
     ports: $ports, servers: ($servers | split(" ")), configs: ($configs | split(" ")), phases: [inputs]}'
}

# ---------------------------------------------------------------- main
start=$(date +%s)
build_mtftpd "$MTFTPD_BIN"
[ -n "$HPA_BIN" ] || warn "tftpd-hpa's in.tftpd not found (installed, or unpacked by scripts/test-deps.sh in $HPA_UNPACKED); skipping it"
command -v dpkg >/dev/null && command -v apt-get >/dev/null && fetch_atftpd ||
  { [ -n "$ATFTPD_BIN" ] || warn "no atftpd; skipping it"; }

if [ -d /dev/shm ] && [ "$(df -k --output=avail /dev/shm | tail -n1)" -gt $((4 * SIZE / 1024)) ]; then
  WORK=$(mktemp -d /dev/shm/mtftpd-bench.XXXXXX)
else
  WORK=$(mktemp -d /tmp/mtftpd-bench.XXXXXX)
fi
chmod 755 "$WORK"
ROOTDIR=$WORK/root OUTDIR=$WORK/out
mkdir -p "$ROOTDIR" "$OUTDIR"
chmod 755 "$ROOTDIR"
head -c "$SIZE" /dev/urandom >"$ROOTDIR/$FILE"
echo ready >"$ROOTDIR/ready.txt"
chmod 644 "$ROOTDIR/$FILE" "$ROOTDIR/ready.txt"
WANT=$(sha256sum "$ROOTDIR/$FILE" | cut -d' ' -f1)
: >"$WORK/results.jsonl"
: >"$WORK/transfers.jsonl"

PHASES_RUN=()
if [ "$mode" = loopback ] || [ "$mode" = both ]; then
  info "phase loopback"
  SRV_NS= CLI_NS= ADDR=127.0.0.1
  run_phase loopback
  PHASES_RUN+=(loopback)
fi
if [ "$mode" = netns ] || [ "$mode" = both ]; then
  info "phase netns"
  setup_netns
  run_phase netns
  teardown_netns
  PHASES_RUN+=(netns)
fi

mkdir -p "$REPO/bench-out"
out=$REPO/bench-out/unicast-$(date +%Y%m%d-%H%M%S)
run_json >"$out.json"
"$MTFTPD_BIN" bench report unicast --in "$out.json" -o "$out.md" || die "bench report unicast failed (the run is in $out.json)"
cat "$out.md"
info "wrote $out.md in $(( $(date +%s) - start )) s"
