#!/usr/bin/env bash
# bench-unicast.sh — single-client download throughput of a 64 MiB file,
# mtftpd vs tftpd-hpa vs atftpd, measured in the same run (called by
# `make bench`).
#
#   scripts/bench-unicast.sh [--loopback | --netns | --both]
#
# --loopback  servers and client on 127.0.0.1 in the current namespace
# --netns     server in one network namespace, client in another, joined by a
#             veth pair (192.0.2.1/24 server, 192.0.2.2/24 client) that this
#             script creates and deletes; nothing touches real interfaces
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
#   BENCH_NETNS_MTU=1500  veth MTU in --netns mode
#   BENCH_SKIP_BUILD=1    use an existing $MTFTPD_BIN instead of building
#   BENCH_MTFTPD_FLAGS="--tftp.allow_fragments true"   extra flags for mtftpd serve
#   MTFTPD_BIN=/tmp/mtftpd-bench
#   BENCH_CACHE=/var/cache/mtftpd-bench   where the atftpd .deb is unpacked
#   BENCH_FAULT=sha       test hook: corrupt the first download (must fail)
#
# Results: markdown on stdout and in bench-out/unicast-YYYYmmdd-HHMMSS.md.
set -euo pipefail

prog=bench-unicast
die() { echo "$prog: FATAL: $*" >&2; exit 1; }
warn() { echo "$prog: warning: $*" >&2; }
info() { echo "$prog: $*" >&2; }

usage() { sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; }

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

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
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
CONFIGS=(atftp-1468-w64 atftp-65464 curl-512 curl-1468)

for t in atftp curl ip sha256sum awk ss timeout; do
  command -v "$t" >/dev/null || die "missing tool: $t (scripts/test-deps.sh installs the clients)"
done

# ---------------------------------------------------------------- cleanup
WORK=
declare -a SRV_PIDS=()     # every server we started
declare -a NETNSES=()      # namespaces we created
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

cleanup() {
  local rc=$? ns
  trap - EXIT INT TERM
  stop_servers
  for ns in "${NETNSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  [ -n "$WORK" ] && rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- peers
build_mtftpd() {
  if [ "${BENCH_SKIP_BUILD:-}" = 1 ]; then
    [ -x "$MTFTPD_BIN" ] || die "BENCH_SKIP_BUILD=1 but $MTFTPD_BIN is missing"
    return
  fi
  command -v go >/dev/null || die "go not found"
  info "building mtftpd -> $MTFTPD_BIN"
  (cd "$REPO" && timeout 600 go build -o "$MTFTPD_BIN" ./cmd/mtftpd) ||
    die "go build ./cmd/mtftpd failed"
}

HPA_BIN=/usr/sbin/in.tftpd
ATFTPD_BIN=
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

# fetch_atftpd, cg_attach, cg_cpu, cg_remove_all
# shellcheck source=scripts/bench-lib.sh
. "$REPO/scripts/bench-lib.sh"

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
    tftpd-hpa) [ -x "$HPA_BIN" ] ;;
    atftpd) [ -n "$ATFTPD_BIN" ] ;;
  esac
}

server_cmd() { # name -> SCMD array
  local port; port=$(port_of "$1")
  case $1 in
    mtftpd) SCMD=("$MTFTPD_BIN" serve --tftp.listen "$ADDR:$port" --tftp.root "$ROOTDIR"
                  --log.level info --log.format json --tftp.shutdown_grace 1s ${BENCH_MTFTPD_FLAGS:-}) ;;
    # as root, in.tftpd drops to user tftp: ROOTDIR and the file are world-readable
    tftpd-hpa) SCMD=("$HPA_BIN" --foreground --listen --address "$ADDR:$port" --secure "$ROOTDIR") ;;
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

declare -A TIMES=() CPUS=() MT_NEG=() DPS=()

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
    TIMES[$phase/$srv/$cfg]+="$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.4f", b-a}') "
    CPUS[$phase/$srv/$cfg]+="$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.3f", b-a}') "
  done
  info "$phase $srv $cfg: ${TIMES[$phase/$srv/$cfg]}s"
  if [ "$srv" = mtftpd ]; then
    # transfer lines of the timed runs: negotiated options and datagrams/syscall
    local lines; lines=$(tail -n +"$((mark + 1))" "$log" | grep '"message":"transfer"' || true)
    MT_NEG[$phase/$cfg]=$(printf '%s\n' "$lines" | awk '
      match($0, /"blksize":[0-9]+/) { b = substr($0, RSTART + 10, RLENGTH - 10) }
      match($0, /"windowsize":[0-9]+/) { w = substr($0, RSTART + 13, RLENGTH - 13) }
      END { if (b != "") printf "%s/%s", b, w; else printf "?" }')
    DPS[$phase/$cfg]=$(printf '%s\n' "$lines" | awk '
      /"message":"transfer"/ { n++
        if (match($0, /"datagrams":[0-9]+/)) d += substr($0, RSTART + 12, RLENGTH - 12)
        if (match($0, /"syscalls":[0-9]+/)) s += substr($0, RSTART + 11, RLENGTH - 11) }
      END { if (s > 0) printf "%.2f (%d datagrams / %d syscalls over %d transfers)", d / s, d, s, n
            else printf "n/a (no datagrams/syscalls fields in %d transfer lines)", n }')
  fi
}

median() { tr ' ' '\n' | awk 'NF' | sort -g | awk '{a[NR] = $1} END {
  if (NR == 0) print ""; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.4f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

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

setup_netns() {
  local base=mtfb$$ root_vals after
  SRV_NS=$base-srv CLI_NS=$base-cli
  ip netns del "$SRV_NS" 2>/dev/null || true
  ip netns del "$CLI_NS" 2>/dev/null || true
  ip netns add "$SRV_NS"; NETNSES+=("$SRV_NS")
  ip netns add "$CLI_NS"; NETNSES+=("$CLI_NS")
  # the veth pair is created directly inside the namespaces
  ip -n "$SRV_NS" link add mtfb0 mtu "$NETNS_MTU" type veth peer name mtfb1 mtu "$NETNS_MTU" netns "$CLI_NS"
  ip -n "$SRV_NS" addr add 192.0.2.1/24 dev mtfb0
  ip -n "$CLI_NS" addr add 192.0.2.2/24 dev mtfb1
  ip -n "$SRV_NS" link set lo up; ip -n "$SRV_NS" link set mtfb0 up
  ip -n "$CLI_NS" link set lo up; ip -n "$CLI_NS" link set mtfb1 up
  ADDR=192.0.2.1
  # Socket-buffer sysctls, only if they are per-namespace on this kernel: an
  # older kernel does not show net.core.rmem_max inside a child namespace at
  # all. Belt and braces: the root values are compared before and after.
  root_vals=$(sysctl -n net.core.rmem_max net.core.wmem_max net.core.rmem_default net.core.wmem_default | paste -sd' ')
  NETNS_SYSCTL="not changed: net.core.*mem_* are not per-namespace on this kernel (root: rmem_max wmem_max rmem_default wmem_default = $root_vals)"
  if ip netns exec "$SRV_NS" test -e /proc/sys/net/core/rmem_max &&
     ! ip netns exec "$SRV_NS" test -e /proc/sys/net/core/netdev_max_backlog &&
     ! ip netns exec "$SRV_NS" test -w /proc/sys/net/core/rmem_max; then
    # e.g. 6.x: visible but read-only in child namespaces, mirroring the root's
    NETNS_SYSCTL="not changed: net.core.*mem_* are read-only in child namespaces on this kernel and mirror the root namespace (rmem_max wmem_max rmem_default wmem_default = $root_vals)"
  elif ip netns exec "$SRV_NS" test -e /proc/sys/net/core/rmem_max &&
     ! ip netns exec "$SRV_NS" test -e /proc/sys/net/core/netdev_max_backlog; then
    local ns k v
    for ns in "$SRV_NS" "$CLI_NS"; do
      for k in rmem_max=16777216 wmem_max=16777216 rmem_default=4194304 wmem_default=4194304; do
        v=${k#*=} k=${k%%=*}
        ip netns exec "$ns" sh -c "echo $v > /proc/sys/net/core/$k" || die "cannot set net.core.$k in $ns"
      done
    done
    after=$(sysctl -n net.core.rmem_max net.core.wmem_max net.core.rmem_default net.core.wmem_default | paste -sd' ')
    if [ "$after" != "$root_vals" ]; then
      set -- $root_vals
      sysctl -q -w net.core.rmem_max="$1" net.core.wmem_max="$2" net.core.rmem_default="$3" net.core.wmem_default="$4"
      die "net.core.*mem_* turned out to be global; root values restored to $root_vals"
    fi
    NETNS_SYSCTL="in both namespaces: net.core.rmem_max=wmem_max=16777216, rmem_default=wmem_default=4194304 (per-netns on this kernel; root namespace untouched: $root_vals)"
  fi
  # sanity: the client's route to the server is the veth
  ip -n "$CLI_NS" route get 192.0.2.1 | grep -q 'dev mtfb1' || die "veth pair not set up as expected"
}

teardown_netns() {
  local ns
  for ns in "${NETNSES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  NETNSES=()
  SRV_NS= CLI_NS=
}

# ---------------------------------------------------------------- report
fmt_table() { # phase
  local phase=$1 cfg srv med mbps cpu neg r1 r2
  local -A MB=()
  echo "| client options | mtftpd MB/s | tftpd-hpa MB/s | atftpd MB/s | mtftpd/tftpd-hpa | mtftpd/atftpd | server CPU s/run (mtftpd / hpa / atftpd) | mtftpd blksize/window |"
  echo "|---|---:|---:|---:|---:|---:|---|---|"
  for cfg in "${CONFIGS[@]}"; do
    cpu=
    for srv in "${SERVERS[@]}"; do
      med=$(printf '%s' "${TIMES[$phase/$srv/$cfg]:-}" | median)
      if [ -n "$med" ]; then
        MB[$srv]=$(awk -v b="$SIZE" -v s="$med" 'BEGIN{printf "%.1f", b / s / 1e6}')
        cpu+="$(printf '%s' "${CPUS[$phase/$srv/$cfg]}" | median) / "
      else
        MB[$srv]=n/a; cpu+="n/a / "
      fi
    done
    r1=$(awk -v a="${MB[mtftpd]}" -v b="${MB[tftpd-hpa]}" 'BEGIN{if (b + 0 > 0 && a + 0 > 0) printf "%.2f×", a / b; else printf "n/a"}')
    r2=$(awk -v a="${MB[mtftpd]}" -v b="${MB[atftpd]}" 'BEGIN{if (b + 0 > 0 && a + 0 > 0) printf "%.2f×", a / b; else printf "n/a"}')
    neg=${MT_NEG[$phase/$cfg]:-?}
    echo "| $cfg | ${MB[mtftpd]} | ${MB[tftpd-hpa]} | ${MB[atftpd]} | $r1 | $r2 | ${cpu% / } | $neg |"
  done
  echo
  echo "mtftpd datagrams per send syscall, atftp-1468-w64 timed runs: ${DPS[$phase/atftp-1468-w64]:-n/a}"
  echo
  echo "<details><summary>raw wall times (s) and server CPU (s) per run</summary>"
  echo
  for cfg in "${CONFIGS[@]}"; do
    for srv in "${SERVERS[@]}"; do
      [ -n "${TIMES[$phase/$srv/$cfg]:-}" ] || continue
      echo "- $cfg / $srv: wall ${TIMES[$phase/$srv/$cfg]% } | cpu ${CPUS[$phase/$srv/$cfg]% }"
    done
  done
  echo
  echo "</details>"
}

report() {
  local phase cfg srv
  echo "# mtftpd unicast download benchmark"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- kernel: $(uname -r)"
  echo "- CPU: $(lscpu 2>/dev/null | awk -F: '/^Model name/{gsub(/^ +/, "", $2); print $2; exit}') ($(nproc) CPUs)"
  echo "- mtftpd: $(cd "$REPO" && git describe --tags --always --dirty 2>/dev/null || echo unknown) (go build -o $MTFTPD_BIN ./cmd/mtftpd)"
  echo "- tftpd-hpa: $(dpkg-query -W -f='${Version}' tftpd-hpa 2>/dev/null || echo n/a); atftpd: $(basename "$(ls -1 "$CACHE"/atftpd_*.deb 2>/dev/null | tail -n1)" 2>/dev/null || echo n/a) (unpacked in $CACHE/atftpd-root)"
  echo "- clients: atftp $(dpkg-query -W -f='${Version}' atftp 2>/dev/null || echo '?'); $(curl --version | head -n1 | cut -d' ' -f1-2)"
  echo "- file: $SIZE bytes of random data (sha256 $WANT), on tmpfs; output to tmpfs"
  echo "- method: per server x client pair, 1 warm-up + $RUNS timed runs ($CURL_RUNS for curl rows), each output sha256-verified;" \
       "MB/s = $SIZE bytes / median wall time / 1e6 (wall time includes client start-up; in netns mode also \`ip netns exec\`)."
  echo "  Server CPU = median per run, $( [ "$CG_KIND" = none ] && echo "from /proc/PID/stat (misses tftpd-hpa's forked children)" || echo "from a per-server cgroup ($CG_KIND), which includes tftpd-hpa's forked children")."
  echo "- tftpd-hpa 5.2 ignores windowsize; atftpd 0.8 and mtftpd grant it. mtftpd caps blksize at the interface MTU - 32."
  for phase in "${PHASES_RUN[@]}"; do
    echo
    case $phase in
      loopback) echo "## loopback (127.0.0.1, root namespace, default socket-buffer sysctls)" ;;
      netns) echo "## netns (server ns 192.0.2.1 <-veth mtu $NETNS_MTU-> client ns 192.0.2.2)"
             echo
             echo "sysctl: $NETNS_SYSCTL" ;;
    esac
    echo
    fmt_table "$phase"
    echo
    echo "Commands (PORT = $PORT_mtftpd mtftpd, $PORT_tftpd_hpa tftpd-hpa, $PORT_atftpd atftpd):"
    echo
    echo '```'
    for srv in "${SERVERS[@]}"; do
      [ -n "${CMD_TEXT[$phase/$srv]:-}" ] && echo "${CMD_TEXT[$phase/$srv]% }"
    done
    for cfg in "${CONFIGS[@]}"; do
      [ -n "${CMD_TEXT[$phase/client/$cfg]:-}" ] && echo "${CMD_TEXT[$phase/client/$cfg]% }   # $cfg"
    done
    echo '```'
  done
}

# ---------------------------------------------------------------- main
start=$(date +%s)
build_mtftpd
[ -x "$HPA_BIN" ] || warn "tftpd-hpa ($HPA_BIN) not installed; skipping it"
command -v dpkg >/dev/null && command -v apt-get >/dev/null && fetch_atftpd ||
  { [ -n "$ATFTPD_BIN" ] || warn "no atftpd; skipping it"; }

if [ -d /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR==2{print $4}')" -gt $((4 * SIZE / 1024)) ]; then
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
md=$REPO/bench-out/unicast-$(date +%Y%m%d-%H%M%S).md
report | tee "$md"
info "wrote $md in $(( $(date +%s) - start )) s"
