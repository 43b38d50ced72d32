#!/usr/bin/env bash
# bench-http.sh — HTTP download throughput of one big file, mtftpd's mirror
# vs nginx (Debian's package), both on 127.0.0.1 in the same run (called by
# `make bench-http`; not part of `make test`).
#
#   scripts/bench-http.sh
#
# The file (BENCH_HTTP_MB MiB of random bytes) is generated in a temp dir.
# nginx is not installed as a service: its .deb is unpacked into
# $BENCH_CACHE (apt-get download + dpkg -x) unless /usr/sbin/nginx exists,
# and it runs in the foreground on an unprivileged loopback port with a
# config in the temp dir. Each server gets one warm-up download, checked by
# sha256, then BENCH_RUNS timed downloads with
# `curl -o /dev/null -w '%{speed_download}'`, alternating servers so that
# both see the same machine load.
#
# Environment:
#   BENCH_HTTP_MB=1024    file size in MiB
#   BENCH_RUNS=5          timed downloads per server (1..20)
#   MTFTPD_BIN=./mtftpd   the binary to measure (`make build` makes it if missing)
#   BENCH_CACHE=/var/cache/mtftpd-bench   where the nginx .deb is unpacked
#
# Results: the run as JSON in bench-out/http-YYYYmmdd-HHMMSS.json, rendered by
# `mtftpd bench report http` to markdown on stdout and in .md beside it.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"

case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

REPO=$BENCH_REPO
MB=${BENCH_HTTP_MB:-1024}
RUNS=${BENCH_RUNS:-5}
[[ "$MB" =~ ^[0-9]+$ ]] && [ "$MB" -ge 1 ] && [ "$MB" -le 8192 ] || die "BENCH_HTTP_MB must be 1..8192"
[[ "$RUNS" =~ ^[0-9]+$ ]] && [ "$RUNS" -ge 1 ] && [ "$RUNS" -le 20 ] || die "BENCH_RUNS must be 1..20"
MTFTPD_BIN=${MTFTPD_BIN:-$REPO/mtftpd}
CACHE=${BENCH_CACHE:-/var/cache/mtftpd-bench}
PORT_mtftpd=18090
PORT_nginx=18091
TFTP_PORT=16990
for t in curl sha256sum jq timeout; do
  command -v "$t" >/dev/null || die "missing tool: $t"
done

WORK=
declare -a PIDS=()
at_exit '[ -z "$WORK" ] || rm -rf "$WORK"'
at_exit 'for pid in "${PIDS[@]}"; do stop_pid "$pid"; done'

# ---------------------------------------------------------------- servers
if [ ! -x "$MTFTPD_BIN" ]; then
  info "building $MTFTPD_BIN (make build)"
  make -C "$REPO" -s build >&2 || die "make build failed"
fi

NGINX=/usr/sbin/nginx
if [ ! -x "$NGINX" ]; then
  NGINX=$CACHE/nginx/usr/sbin/nginx
  if [ ! -x "$NGINX" ]; then
    mkdir -p "$CACHE"
    if ! ls "$CACHE"/nginx_*.deb >/dev/null 2>&1; then
      info "apt-get download nginx -> $CACHE (unpacked, never installed as a service)"
      (cd "$CACHE" && timeout 120 apt-get download -q nginx >/dev/null 2>&1) ||
        { timeout 300 apt-get update -qq >/dev/null 2>&1 || true
          (cd "$CACHE" && timeout 120 apt-get download -q nginx >/dev/null 2>&1) || die "apt-get download nginx failed"; }
    fi
    dpkg -x "$(ls "$CACHE"/nginx_*.deb | head -1)" "$CACHE/nginx" || die "dpkg -x nginx failed"
  fi
fi
"$NGINX" -v 2>/dev/null || "$NGINX" -v || die "$NGINX does not run (missing libraries?)"

WORK=$(mktemp -d /tmp/bench-http.XXXXXX)
chmod 755 "$WORK" # nginx workers run as nobody when started by root
mkdir -p "$WORK/root" "$WORK/nginx"
info "generating $MB MiB in $WORK/root/big.img"
head -c "$((MB * 1024 * 1024))" /dev/urandom > "$WORK/root/big.img"
chmod 644 "$WORK/root/big.img"
WANT=$(sha256sum < "$WORK/root/big.img" | cut -d' ' -f1)

cat > "$WORK/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 64; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  client_body_temp_path $WORK/nginx/body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$PORT_nginx;
    root $WORK/root;
  }
}
EOF

for port in $PORT_mtftpd $PORT_nginx; do
  ! curl -s -o /dev/null "http://127.0.0.1:$port/" || die "127.0.0.1:$port is already in use"
done
"$MTFTPD_BIN" serve --tftp.listen "127.0.0.1:$TFTP_PORT" --tftp.root "$WORK/root" \
  --http.listen "127.0.0.1:$PORT_mtftpd" --mtftp.enabled false --log.level warn 2>"$WORK/mtftpd.log" &
PIDS+=($!)
PID_mtftpd=$!
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx.conf" -e "$WORK/nginx/error.log" 2>>"$WORK/nginx/error.log" &
PIDS+=($!)
PID_nginx=$!

url() { echo "http://127.0.0.1:$1/big.img"; }
for s in mtftpd nginx; do
  port=PORT_$s
  for i in $(seq 1 50); do
    curl -s -o /dev/null "http://127.0.0.1:${!port}/" && break
    [ "$i" = 50 ] && { cat "$WORK/mtftpd.log" "$WORK/nginx/error.log" >&2 || true; die "$s did not start"; }
    sleep 0.1
  done
  got=$(timeout 300 curl -sS "$(url "${!port}")" | sha256sum | cut -d' ' -f1)
  [ "$got" = "$WANT" ] || die "$s served different bytes (sha256 $got, want $WANT)"
done

# cpu_ticks PID: user+system clock ticks of PID and its children (nginx's
# workers), so the report can say what each byte cost the server.
proc_ticks() { # PID: utime + stime of /proc/PID/stat (fields 14, 15; comm may hold spaces)
  local s f
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return 0; }
  read -r -a f <<<"${s##*) }"
  echo $((f[11] + f[12]))
}
cpu_ticks() {
  local p t=0
  for p in "$1" $(ps -o pid= --ppid "$1" 2>/dev/null); do
    t=$((t + $(proc_ticks "$p")))
  done
  echo "$t"
}
declare -A SPEEDS=() TICKS=()
for r in $(seq 1 "$RUNS"); do
  for s in mtftpd nginx; do
    port=PORT_$s
    pid=PID_$s
    t0=$(cpu_ticks "${!pid}")
    v=$(timeout 300 curl -sS -o /dev/null -w '%{speed_download}' "$(url "${!port}")") || die "$s: curl failed"
    [[ "$v" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$s: curl gave speed '$v'"
    TICKS[$s]=$(( ${TICKS[$s]:-0} + $(cpu_ticks "${!pid}") - t0 ))
    SPEEDS[$s]+="$v "
    info "run $r $s: $(( ${v%.*} / 1000000 )) MB/s"
  done
done

# The run as JSON (docs/bench-json.md), rendered by `mtftpd bench report http`.
mkdir -p "$REPO/bench-out"
out="$REPO/bench-out/http-$(date -u +%Y%m%d-%H%M%S)"
server_json() { # NAME
  # shellcheck disable=SC2086 # the speeds are split on purpose
  printf '%s\n' ${SPEEDS[$1]} | jq -s --arg n "$1" --argjson t "${TICKS[$1]}" '{name: $n, speeds_bps: ., cpu_ticks: $t}'
}
jq -n --arg date "$(date -u +%FT%TZ)" --argjson host "$(host_json)" --argjson mb "$MB" --argjson runs "$RUNS" \
  --argjson clk "$(getconf CLK_TCK)" --arg nginx "$("$NGINX" -v 2>&1 | sed 's/.*: //')" \
  --argjson m "$(server_json mtftpd)" --argjson n "$(server_json nginx)" \
  '{date: $date, host: $host, file_mib: $mb, runs: $runs, clk_tck: $clk, nginx: $nginx, servers: [$m, $n]}' >"$out.json"
"$MTFTPD_BIN" bench report http --in "$out.json" -o "$out.md" || die "bench report http failed (the run is in $out.json)"
cat "$out.md"
