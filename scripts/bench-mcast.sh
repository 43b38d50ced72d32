#!/usr/bin/env bash
# bench-mcast.sh — mtftpd's native multicast against udpcast (udp-sender /
# udp-receiver, Debian `udpcast`) in the namespace lab, same run, same file.
#
#   scripts/bench-mcast.sh            # all scenarios
#   RECEIVERS=50 SIZE_MB=64 scripts/bench-mcast.sh
#   SCENARIOS="clean loss" SERVERS=mtftpd START_DELAY=3s scripts/bench-mcast.sh
#
# Scenarios (issue 5's numbers):
#   clean   RECEIVERS receivers, no impairment: time until every receiver
#           holds the verified file, and the server's eth0 TX bytes / file
#           size — mtftpd native and udpcast.
#   loss    the same with LOSS % random loss on every client port (nftables).
#   tbf     the server's port limited to RATE_MBIT (tbf): SLOW_RECEIVERS
#           receivers of SLOW_MB MiB against one receiver alone.
#   rfc2090 RFC_RECEIVERS atftp clients (--option multicast, blksize 1428)
#           of an RFC_MB MiB file from mtftpd and from atftpd (the Debian
#           package, unpacked by scripts/bench-lib.sh, not installed).
# The report is a markdown table on stdout, rendered by `mtftpd bench
# report mcast` from the run's JSON (bench-out/mcast-YYYYmmdd-HHMMSS.json);
# docs/benchmarks-mcast.md keeps the last one, with its context. Times run from launching the receivers to the last one finishing, so
# they include mtftpd's gathering delay (START_DELAY) and udpcast's wait
# for --min-receivers. Root only; everything happens inside lab
# namespaces (scripts/netlab.sh) that are removed at exit.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
cd "$BENCH_REPO"
RECEIVERS=${RECEIVERS:-50}
SIZE_MB=${SIZE_MB:-64}
LOSS=${LOSS:-5}
RATE_MBIT=${RATE_MBIT:-100}
SLOW_RECEIVERS=${SLOW_RECEIVERS:-30}
SLOW_MB=${SLOW_MB:-32}
START_DELAY=${START_DELAY:-1s}
RFC_RECEIVERS=${RFC_RECEIVERS:-20}
RFC_MB=${RFC_MB:-16}
SCENARIOS=${SCENARIOS:-clean loss tbf rfc2090}
SERVERS=${SERVERS:-mtftpd udpcast} # which of them the clean and loss scenarios run
LAB=scripts/netlab.sh
P=mb$$
export PATH=/usr/local/go/bin:$PATH

CACHE=${BENCH_CACHE:-/var/cache/mtftpd-bench}

[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
command -v udp-sender >/dev/null || apt-get install -y udpcast >/dev/null
work=$(mktemp -d)
at_exit 'rm -rf "$work"'
bin=$work/mtftpd
build_mtftpd "$bin"
srvpid=
at_exit 'stop_pid "$srvpid"'
max=$(( RECEIVERS > SLOW_RECEIVERS ? RECEIVERS : SLOW_RECEIVERS ))
lab_up $P "$max"

txbytes() { bash $LAB -p $P counters srv | sed -n 's/^tx_bytes //p'; }
now() { date +%s.%N; }

# serve FILE: mtftpd in srv serving FILE's directory.
serve() {
	[ -n "$srvpid" ] && { kill "$srvpid"; wait "$srvpid" 2>/dev/null || true; }
	ip netns exec $P-srv "$bin" serve --tftp.listen 192.0.2.1:69 --tftp.root "$(dirname "$1")" --http.listen "" \
		--log.format json --mtftp.native_settle "$START_DELAY" >"$work/server.log" 2>&1 &
	srvpid=$!
	for _ in $(seq 50); do grep -q "tftp server listening" "$work/server.log" && return; sleep 0.1; done
	echo "mtftpd did not start" >&2; cat "$work/server.log" >&2; exit 1
}

# verify N FILE: every receiver's output matches FILE.
verify() {
	local want bad=0
	want=$(sha256sum <"$2" | cut -d' ' -f1)
	for i in $(seq "$1"); do
		[ "$(sha256sum <"$work/out$i" 2>/dev/null | cut -d' ' -f1)" = "$want" ] || bad=$((bad + 1))
	done
	echo "$bad"
}

# run_mtftpd N FILE: N native receivers at once; prints "seconds tx_bytes
# failed file_size" (run_udpcast and run_atftp too).
run_mtftpd() {
	local n=$1 file=$2 tx0 t0 t1 tx1
	rm -f "$work"/out*
	tx0=$(txbytes); t0=$(now)
	for i in $(seq "$n"); do
		timeout -k 5 300 ip netns exec $P-c$i "$bin" get -q --multicast -o "$work/out$i" 192.0.2.1 "$(basename "$file")" &
	done
	wait # run in a subshell: its only children are the receivers
	t1=$(now); tx1=$(txbytes)
	echo "$(echo "$t1 - $t0" | bc) $((tx1 - tx0)) $(verify "$n" "$file") $(stat -c %s "$file")"
}

# run_udpcast N FILE: udp-sender in srv, N udp-receivers.
run_udpcast() {
	local n=$1 file=$2 tx0 t0 t1 tx1
	rm -f "$work"/out*
	tx0=$(txbytes); t0=$(now)
	timeout -k 5 300 ip netns exec $P-srv udp-sender --file "$file" --interface eth0 --min-receivers "$n" --max-wait 60 --nokbd \
		--mcast-data-address 239.255.9.9 --mcast-rdv-address 239.255.9.8 >"$work/udp-sender.log" 2>&1 &
	for i in $(seq "$n"); do
		timeout -k 5 300 ip netns exec $P-c$i udp-receiver --file "$work/out$i" --interface eth0 --nokbd \
			--mcast-rdv-address 239.255.9.8 >/dev/null 2>&1 &
	done
	wait # the sender and the receivers
	t1=$(now); tx1=$(txbytes)
	echo "$(echo "$t1 - $t0" | bc) $((tx1 - tx0)) $(verify "$n" "$file") $(stat -c %s "$file")"
}

# run_atftp N FILE: N atftp RFC 2090 clients against whatever serves port 69.
run_atftp() {
	local n=$1 file=$2 tx0 t0 t1 tx1
	rm -f "$work"/out*
	tx0=$(txbytes); t0=$(now)
	for i in $(seq "$n"); do
		timeout -k 5 300 ip netns exec $P-c$i atftp --option multicast --option "blksize 1428" -g -r "$(basename "$file")" \
			-l "$work/out$i" 192.0.2.1 69 >/dev/null 2>&1 &
	done
	wait
	t1=$(now); tx1=$(txbytes)
	echo "$(echo "$t1 - $t0" | bc) $((tx1 - tx0)) $(verify "$n" "$file") $(stat -c %s "$file")"
}

# row SCENARIO SERVER N SECONDS TX_BYTES FAILED FILE_SIZE: one row of the run.
: >"$work/rows.jsonl"
row() {
	jq -n -c --arg sc "$1" --arg s "$2" --argjson n "$3" --arg t "$4" --argjson tx "$5" --argjson f "$6" --argjson size "$7" \
		'{scenario: $sc, server: $s, receivers: $n, seconds: ($t | tonumber), tx_bytes: $tx, file_size: $size, failed: $f}' >>"$work/rows.jsonl"
	info "$1 $2 $3: $4 s, $6 failed"
}
big=$work/root/image.bin
mkdir -p "$work/root"
head -c "${SIZE_MB}M" /dev/urandom >"$big"
for sc in $SCENARIOS; do
	case $sc in
	clean | loss)
		bash $LAB -p $P impair all clear >/dev/null
		[ "$sc" = loss ] && bash $LAB -p $P impair all loss "$LOSS" >/dev/null
		if [[ " $SERVERS " == *" mtftpd "* ]]; then
			serve "$big"
			read -r t r f z < <(run_mtftpd "$RECEIVERS" "$big")
			row "$sc" mtftpd "$RECEIVERS" "$t" "$r" "$f" "$z"
		fi
		if [[ " $SERVERS " == *" udpcast "* ]]; then
			read -r t r f z < <(run_udpcast "$RECEIVERS" "$big")
			row "$sc" udpcast "$RECEIVERS" "$t" "$r" "$f" "$z"
		fi
		;;
	tbf)
		bash $LAB -p $P impair all clear >/dev/null
		bash $LAB -p $P impair srv rate "$RATE_MBIT" >/dev/null
		small=$work/slow/image.bin
		mkdir -p "$work/slow"
		head -c "${SLOW_MB}M" /dev/urandom >"$small"
		serve "$small"
		read -r t r f z < <(run_mtftpd 1 "$small")
		row "tbf" mtftpd 1 "$t" "$r" "$f" "$z"
		read -r t r f z < <(run_mtftpd "$SLOW_RECEIVERS" "$small")
		row "tbf" mtftpd "$SLOW_RECEIVERS" "$t" "$r" "$f" "$z"
		bash $LAB -p $P impair srv clear >/dev/null
		;;
	rfc2090)
		bash $LAB -p $P impair all clear >/dev/null
		rfc=$work/rfc/image.bin
		mkdir -p "$work/rfc"
		head -c "${RFC_MB}M" /dev/urandom >"$rfc"
		serve "$rfc"
		read -r t r f z < <(run_atftp "$RFC_RECEIVERS" "$rfc")
		row rfc2090 mtftpd "$RFC_RECEIVERS" "$t" "$r" "$f" "$z"
		stop_pid "$srvpid"
		srvpid=
		fetch_atftpd
		if [ -n "$ATFTPD_BIN" ]; then
			ip netns exec $P-srv "$ATFTPD_BIN" --daemon --no-fork --port 69 --bind-address 192.0.2.1 --user root --group root \
				--logfile /dev/null --mcast-addr 239.255.0.0-255 --mcast-port 1758 --mcast-ttl 1 --maxthread 1024 "$work/rfc" &
			srvpid=$!
			sleep 1
			read -r t r f z < <(run_atftp "$RFC_RECEIVERS" "$rfc")
			row rfc2090 atftpd "$RFC_RECEIVERS" "$t" "$r" "$f" "$z"
			stop_pid "$srvpid"
			srvpid=
		fi
		;;
	esac
done
mkdir -p bench-out
out=bench-out/mcast-$(date +%Y%m%d-%H%M%S)
jq -n --argjson host "$(host_json)" --arg date "$(date -u +%FT%TZ)" --argjson rate "$RATE_MBIT" --argjson slow "$SLOW_RECEIVERS" \
	--slurpfile rows "$work/rows.jsonl" '{date: $date, host: $host, rate_mbit: $rate, slow_receivers: $slow, rows: $rows}' >"$out.json"
"$bin" bench report mcast --in "$out.json" || die "bench report mcast failed (the run is in $out.json)"
