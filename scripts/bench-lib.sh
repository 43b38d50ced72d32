# shellcheck shell=bash
# bench-lib.sh — shell functions shared by the benchmark and soak scripts
# (scripts/bench-*.sh, scripts/soak.sh). Source it first thing: it sets
# the EXIT trap that runs what at_exit registered, and starts nothing.
#
#   prog         the script's name in messages (set it before sourcing;
#                default: the file name without .sh)
#   CACHE        where the atftpd .deb is downloaded and unpacked
#   ATFTPD_BIN   set by fetch_atftpd (empty when atftpd is unavailable)
#   CG_KIND      none, v1 or v2: per-server CPU accounting (set on source)
#
# Reports: the scripts write what they measured as JSON and render it with
# `mtftpd bench report KIND` (bench/report/*.tmpl), not in shell.

prog=${prog:-$(basename "$0" .sh)}
info() { echo "$prog: $(date -u +%H:%M:%S) $*" >&2; }
warn() { echo "$prog: warning: $*" >&2; }
die() { echo "$prog: FATAL: $*" >&2; exit 1; }
# usage: the script's header comment (line 2 to the first line that is
# not a comment) as its --help.
usage() { sed -n '2,/^\([^#]\|$\)/s/^# \{0,1\}//p' "$0"; }

# at_exit 'CMD': run CMD at exit (last registered first), whatever the
# exit; CMD is evaluated then, so single-quote variables that change.
declare -a AT_EXIT=()
at_exit() { AT_EXIT+=("$1"); }
_run_at_exit() {
  local rc=$? i
  trap - EXIT INT TERM
  for ((i = ${#AT_EXIT[@]} - 1; i >= 0; i--)); do eval "${AT_EXIT[i]}" || true; done
  exit "$rc"
}
trap _run_at_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# lab_up PREFIX ARGS...: scripts/netlab.sh -p PREFIX up ARGS (dies when
# PREFIX-* namespaces exist already), taken down at exit. Everything the
# scripts run on a network runs in these namespaces (docs/design.md, "The
# network-namespace lab").
BENCH_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NETLAB=$BENCH_REPO/scripts/netlab.sh
lab_up() {
  local p=$1
  shift
  if ip netns list 2>/dev/null | cut -d' ' -f1 | grep -q "^$p-"; then
    die "namespaces $p-* exist already (another run, or a stale lab: scripts/netlab.sh -p $p down)"
  fi
  at_exit "bash '$NETLAB' -p '$p' down >/dev/null 2>&1 || warn 'netlab.sh -p $p down failed'"
  bash "$NETLAB" -p "$p" up "$@" >/dev/null || die "netlab.sh -p $p up $* failed"
}

# build_mtftpd BIN: go build ./cmd/mtftpd -o BIN, or check BIN when
# BENCH_SKIP_BUILD=1.
build_mtftpd() {
  if [ "${BENCH_SKIP_BUILD:-}" = 1 ]; then
    [ -x "$1" ] || die "BENCH_SKIP_BUILD=1 but $1 is missing"
    return 0
  fi
  command -v go >/dev/null || die "go not found"
  info "building mtftpd -> $1"
  (cd "$BENCH_REPO" && CGO_ENABLED=0 timeout 600 go build -trimpath -o "$1" ./cmd/mtftpd) || die "go build ./cmd/mtftpd failed"
}

# tftpd-hpa's in.tftpd: installed, or unpacked where scripts/test-deps.sh
# puts it for `make test` (installing it would start a system service).
# bench/tftp_lab_test.go looks in the same two places.
HPA_UNPACKED=/var/cache/mtftpd-test/tftpd-hpa
HPA_BIN=
for _hpa in /usr/sbin/in.tftpd "$HPA_UNPACKED/usr/sbin/in.tftpd"; do
  [ -x "$_hpa" ] && { HPA_BIN=$_hpa; break; }
done
unset _hpa
hpa_version() { # the tftpd-hpa package version, or n/a
  local v
  v=$(dpkg-query -W -f='${Version}' tftpd-hpa 2>/dev/null || true)
  [ -n "$v" ] || v=$(ls -1 "$HPA_UNPACKED.deb"/tftpd-hpa_*.deb 2>/dev/null | sed -n 's/.*tftpd-hpa_\([^_]*\)_.*/\1/p' | tail -n1)
  echo "${v:-n/a}"
}

# host_json: {"kernel", "cpu", "cpus"} of this machine, for the reports.
host_json() {
  jq -n --arg k "$(uname -r)" --arg c "$(sed -n 's/^model name[[:space:]]*: *//p' /proc/cpuinfo | head -n1)" \
    --argjson n "$(nproc)" '{kernel: $k, cpu: $c, cpus: $n}'
}

stop_pid() { # pid (may be empty): TERM, bounded wait, KILL
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# atftpd conflicts with tftpd-hpa in dpkg, so it is unpacked, not installed.
# Idempotent: an unpacked tree or a downloaded .deb in $CACHE is reused.
fetch_atftpd() {
  local root=$CACHE/atftpd-root deb
  ATFTPD_BIN=
  if [ ! -x "$root/usr/sbin/atftpd" ]; then
    mkdir -p "$CACHE"
    deb=$(ls -1 "$CACHE"/atftpd_*.deb 2>/dev/null | sort -V | tail -n1 || true)
    if [ -z "$deb" ]; then
      info "apt-get download atftpd -> $CACHE"
      if ! (cd "$CACHE" && timeout 120 apt-get download -q atftpd >/dev/null 2>&1); then
        if [ "$(id -u)" = 0 ]; then
          info "apt-get download failed; apt-get update and retry once"
          timeout 300 apt-get update -qq >/dev/null 2>&1 || true
          (cd "$CACHE" && timeout 120 apt-get download -q atftpd >/dev/null 2>&1) || true
        fi
      fi
      deb=$(ls -1 "$CACHE"/atftpd_*.deb 2>/dev/null | sort -V | tail -n1 || true)
      [ -n "$deb" ] || { warn "could not download atftpd; skipping it"; return 0; }
    fi
    rm -rf "$root.tmp"
    dpkg -x "$deb" "$root.tmp" || { warn "dpkg -x $deb failed; skipping atftpd"; return 0; }
    rm -rf "$root" && mv "$root.tmp" "$root"
  fi
  if ldd "$root/usr/sbin/atftpd" 2>/dev/null | grep -q 'not found'; then
    warn "atftpd has missing libraries ($(ldd "$root/usr/sbin/atftpd" | grep 'not found' | tr -s ' \t' ' ')); skipping it"
    return 0
  fi
  ATFTPD_BIN=$root/usr/sbin/atftpd
}

# Per-server CPU accounting: a cgroup (cpuacct v1, or v2 cpu.stat) per
# server, so that forked per-transfer children (tftpd-hpa ignores SIGCHLD,
# so its cutime stays 0) are counted. Fallback: utime+stime+cutime+cstime
# of the server process.
CG_KIND=none CG_ROOT=
if [ -w /sys/fs/cgroup/cpuacct/cgroup.procs ] && [ -r /sys/fs/cgroup/cpuacct/cpuacct.usage ]; then
  CG_KIND=v1 CG_ROOT=/sys/fs/cgroup/cpuacct
elif [ -r /sys/fs/cgroup/cgroup.controllers ] && [ -w /sys/fs/cgroup/cgroup.procs ]; then
  CG_KIND=v2 CG_ROOT=/sys/fs/cgroup
fi
CLK_TCK=$(getconf CLK_TCK)
declare -a SRV_CGS=() # cgroups made by cg_attach, removed by cg_remove_all

cg_attach() { # name pid -> sets CG_LAST to the cgroup path, or "" (CPU from /proc)
  local name=$1 pid=$2 cg
  CG_LAST=
  [ "$CG_KIND" = none ] && return 0
  cg=$CG_ROOT/mtftpd-bench-$$-$name
  mkdir "$cg" 2>/dev/null || { warn "cannot create cgroup $cg; CPU from /proc"; return 0; }
  SRV_CGS+=("$cg")
  if echo "$pid" >"$cg/cgroup.procs" 2>/dev/null; then CG_LAST=$cg; else
    warn "cannot move $name into $cg; CPU from /proc"
  fi
}

cg_cpu() { # cgroup pid -> CPU seconds used so far by the cgroup (or the pid)
  local cg=$1 pid=$2
  if [ -n "$cg" ] && [ "$CG_KIND" = v1 ]; then
    awk '{printf "%.6f\n", $1/1e9}' "$cg/cpuacct.usage"
  elif [ -n "$cg" ]; then
    awk '$1=="usage_usec"{printf "%.6f\n", $2/1e6}' "$cg/cpu.stat"
  else
    # comm may contain spaces: strip through the last ')'
    sed 's/^.*) //' "/proc/$pid/stat" | awk -v t="$CLK_TCK" '{printf "%.6f\n", ($12+$13+$14+$15)/t}'
  fi
}

cg_remove_all() { # kill what is left in our cgroups and remove them
  local cg i p
  for cg in "${SRV_CGS[@]}"; do
    [ -d "$cg" ] || continue
    for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    for i in $(seq 1 20); do rmdir "$cg" 2>/dev/null && break; sleep 0.1; done
    [ -d "$cg" ] && warn "could not remove cgroup $cg"
  done
  SRV_CGS=()
}
