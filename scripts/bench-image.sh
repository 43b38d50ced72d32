#!/usr/bin/env bash
# bench-image.sh — the numbers of issue 12 ("Disk images"), measured in one
# run on this machine (`make bench-image`), written to docs/benchmarks-image.md.
#
# Three raw disks (sparse files in tmpfs; data in extents with holes between,
# one extent in three random bytes, two in three real files from /usr):
#   issue  RAW_GB raw, DATA_MB of data: the issue's image (4 GiB, 1 GiB)
#   small  SMALL_GB raw at the same density
#   room   RAW_GB raw, ROOM_DATA_MB of data: the room's image (see below)
#
# Parts (PARTS, all by default):
#   create  `mtftpd image create` vs `zstd -T0 -3` of the issue disk: sparse,
#           fully allocated (zeros stored, as a block device reads), and its
#           data alone. Best of REPEAT; wall and CPU seconds.
#   one     one receiver, issue image: `image deploy` to a loop device on
#           tmpfs vs what that device takes alone (dd of the raw disk,
#           buffered and O_DIRECT) and what the network gives alone
#           (`get --multicast` of the image file). Best of REPEAT.
#   rss     the receiver's peak RSS (/usr/bin/time %M) and largest live heap
#           (GODEBUG=gctrace=1), small vs issue vs large image (and the room
#           image); what the index fetch costs on the wire.
#   room    RECEIVERS machines in the namespace lab (scripts/netlab.sh), room
#           image: the FOG / Clonezilla pipeline — the zstd image sent by
#           `udp-sender --min-receivers N`, `udp-receiver | zstd -d --sparse
#           -o DISK` in each client, then the disk's SHA-256 checked — against
#           `image deploy --verify --no-resume` with the server holding the
#           session until all N joined ([[mtftp.start]] min_receivers), once
#           as is (index by TFTP) and once with --http (index by HTTP). Time
#           from launch until every disk holds the verified image; server
#           eth0 TX bytes / stored size.
#
#   scripts/bench-image.sh
#   RECEIVERS=20 RAW_GB=1 DATA_MB=256 ROOM_DATA_MB=64 scripts/bench-image.sh   # quicker
#
# Environment (defaults):
#   RECEIVERS=50  RAW_GB=4  DATA_MB=1024  SMALL_GB=1  LARGE_GB=2*RAW_GB
#                      (SMALL_GB and LARGE_GB: the memory part's other images,
#                      at the issue image's density)
#   ROOM_DATA_MB=128   data of the room image: every client disk is a sparse
#                      file in tmpfs, so the room needs RECEIVERS x (its data
#                      chunks) of RAM: 50 x 1 GiB would not fit in 24 GiB,
#                      and the machine is shared
#   MIN_FREE_MB=2048   a watchdog stops the run (and removes everything it
#                      made) when the machine's available memory drops
#                      below this: other work must not be OOM-killed
#   REPEAT=3           repetitions of the create, one and rss measurements
#   PARTS="create one rss room"
#   BUSY_MAX=0.5       before each timed measurement, wait until the rest of
#   QUIET_WAIT=300     the machine uses less than BUSY_MAX CPUs: at most
#   QUIET_BUDGET=1500  QUIET_WAIT seconds each time, QUIET_BUDGET in all;
#                      then measure anyway, and say so in the report
#   BENCH_OUT=docs/benchmarks-image.md    BENCH_SHM=/dev/shm (a tmpfs)
#
# Root only. Everything network happens in lab namespaces mb<pid>-* that are
# removed at exit, with every loop device and file this script made.

# shellcheck disable=SC2016 # at_exit's commands expand at exit
set -euo pipefail
# shellcheck source=scripts/bench-lib.sh
. "$(dirname "$0")/bench-lib.sh"
cd "$BENCH_REPO"
RECEIVERS=${RECEIVERS:-50}
RAW_GB=${RAW_GB:-4}
DATA_MB=${DATA_MB:-1024}
ROOM_DATA_MB=${ROOM_DATA_MB:-128}
MIN_FREE_MB=${MIN_FREE_MB:-2048}
SMALL_GB=${SMALL_GB:-1}
LARGE_GB=${LARGE_GB:-$((2 * RAW_GB))}
REPEAT=${REPEAT:-3}
PARTS=${PARTS:-create one rss room}
BUSY_MAX=${BUSY_MAX:-0.5}
QUIET_WAIT=${QUIET_WAIT:-300}
QUIET_BUDGET=${QUIET_BUDGET:-1500}
OUT=${BENCH_OUT:-docs/benchmarks-image.md}
SHM=${BENCH_SHM:-/dev/shm}
ROOM_TIMEOUT=${ROOM_TIMEOUT:-1200} # seconds: cap of one room run
LAB=scripts/netlab.sh
P=mb$$
SRV=192.0.2.1
export PATH=/usr/local/go/bin:$PATH

CACHE=${BENCH_CACHE:-/var/cache/mtftpd-bench}

[ "$(id -u)" = 0 ] || die "needs root (network namespaces, loop devices)"
for v in RECEIVERS RAW_GB DATA_MB ROOM_DATA_MB SMALL_GB LARGE_GB REPEAT QUIET_WAIT QUIET_BUDGET MIN_FREE_MB; do
	[[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
[[ $BUSY_MAX =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "BUSY_MAX must be a number of CPUs, got '$BUSY_MAX'"
[ "$RECEIVERS" -le 150 ] || die "RECEIVERS must be at most 150 (lab addresses 192.0.2.101-250)"
[ "$DATA_MB" -le $((RAW_GB * 512)) ] && [ "$ROOM_DATA_MB" -le $((RAW_GB * 512)) ] ||
	die "DATA_MB and ROOM_DATA_MB must be at most half of RAW_GB (holes between the data)"
[ "$SMALL_GB" -lt "$RAW_GB" ] && [ "$LARGE_GB" -gt "$RAW_GB" ] || die "want SMALL_GB < RAW_GB < LARGE_GB"
[ $((DATA_MB * SMALL_GB / RAW_GB)) -ge 8 ] || die "the small image would hold under 8 MiB of data: raise DATA_MB or SMALL_GB"
for p in $PARTS; do
	case $p in create | one | rss | room) ;; *) die "PARTS: unknown part '$p' (create one rss room)" ;; esac
done
has_part() { [[ " $PARTS " == *" $1 "* ]]; }
if ! command -v udp-sender >/dev/null || ! command -v udp-receiver >/dev/null; then
	info "installing udpcast"
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q udpcast >/dev/null
fi
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -q time >/dev/null
for t in ip zstd openssl jq losetup cmp dd timeout awk go; do
	command -v "$t" >/dev/null || die "missing tool: $t"
done
[ "$(stat -f -c %T "$SHM")" = tmpfs ] || die "$SHM is not a tmpfs"

MiB=$((1 << 20))
RAW=$((RAW_GB << 30))
DATA=$((DATA_MB * MiB))
ROOM_DATA=$((ROOM_DATA_MB * MiB))
SMALL=$((SMALL_GB << 30))
SMALL_DATA=$((DATA * SMALL_GB / RAW_GB / 4096 * 4096))
LARGE=$((LARGE_GB << 30))
LARGE_DATA=$((DATA * LARGE_GB / RAW_GB / 4096 * 4096))

work=$(mktemp -d "$SHM/mtftpd-bench-image.XXXXXX")
bin=$work/mtftpd
srvpid= wdpid=
declare -a LOOPS=()
# only our loop devices: a loop number may have been reused by someone else
loops_del() {
	local l
	for l in "${LOOPS[@]}"; do
		case $(losetup -n -O BACK-FILE "$l" 2>/dev/null) in "$work"/*) losetup -d "$l" || true ;; esac
	done
}
at_exit 'rm -rf "$work"'
at_exit 'loops_del'
at_exit 'bash $LAB -p $P down >/dev/null 2>&1'
at_exit '[ -z "$wdpid" ] || kill "$wdpid" 2>/dev/null; stop_pid "$srvpid"'

now() { date +%s.%N; }
calc() { awk "BEGIN { printf \"%.${2:-2}f\", $1 }"; } # calc EXPR [DECIMALS]
mb() { calc "$1 / 1e6" 1; }                          # bytes -> MB
alloc() { du -B1 "$1" | cut -f1; }                   # allocated bytes of a file
load() { cut -d' ' -f1-3 /proc/loadavg; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
# busy: CPU seconds the whole machine spent busy so far (all CPUs), and
# steal: those the hypervisor gave to others while we wanted them.
busy() { awk -v t="$CLK_TCK" '$1=="cpu" { print ($2+$3+$4+$7+$8)/t; exit }' /proc/stat; }
steal() { awk -v t="$CLK_TCK" '$1=="cpu" { print $9/t; exit }' /proc/stat; }
# timed OUT CMD...: runs CMD, writes "wall user sys maxrss_kB" to OUT.
timed() {
	local out=$1
	shift
	/usr/bin/time -f '%e %U %S %M' -o "$out" "$@"
}
# keep_best TRY BEST: TRY replaces BEST when BEST is missing or slower.
keep_best() {
	if [ ! -s "$2" ] || lt "$(cut -d' ' -f1 "$1")" "$(cut -d' ' -f1 "$2")"; then mv "$1" "$2"; else rm -f "$1"; fi
}

# wait_quiet WHAT: before a timed measurement, wait (at most QUIET_WAIT
# seconds) until other work keeps less than BUSY_MAX CPUs busy (over 2 s,
# while this script is idle). Sets QUIET_U to the last figure; notes in
# QUIET_LOG when it had to wait or gave up.
QUIET_LOG=()
QUIET_U=0 QUIET_SPENT=0
wait_quiet() {
	local what=$1 b0 b1 u t0=$SECONDS said=
	while :; do
		b0=$(busy)
		sleep 2
		b1=$(busy)
		u=$(calc "($b1 - $b0) / 2")
		lt "$u" "$BUSY_MAX" && break
		if [ $((SECONDS - t0)) -ge "$QUIET_WAIT" ] || [ $((QUIET_SPENT + SECONDS - t0)) -ge "$QUIET_BUDGET" ]; then
			warn "$what: the machine is still busy ($u CPUs of other work); measuring anyway"
			QUIET_LOG+=("$what: other work still used $u CPUs after $((SECONDS - t0)) s of waiting; measured anyway")
			QUIET_U=$u QUIET_SPENT=$((QUIET_SPENT + SECONDS - t0))
			return 0
		fi
		[ -n "$said" ] || info "$what: waiting for a quieter machine ($u CPUs busy, want < $BUSY_MAX)"
		said=1
	done
	QUIET_U=$u QUIET_SPENT=$((QUIET_SPENT + SECONDS - t0))
	[ $((SECONDS - t0)) -le 4 ] || QUIET_LOG+=("$what: waited $((SECONDS - t0)) s until other work used under $BUSY_MAX CPUs")
}

# best OUT WHAT CMD...: runs a local command (no server) REPEAT times, each
# on a quiet machine, and keeps the fastest in OUT as "wall user sys
# maxrss_kB other", other being the CPUs other work used on average while it
# ran (machine busy time less the command's own). While the fastest was
# disturbed (other >= BUSY_MAX), up to REPEAT more tries.
best() {
	local out=$1 what=$2 i b0 b1 w u sy
	shift 2
	rm -f "$out"
	for ((i = 0; i < 2 * REPEAT; i++)); do
		if [ "$i" -ge "$REPEAT" ] && { lt "$(cut -d' ' -f5 "$out")" "$BUSY_MAX" || [ "$QUIET_SPENT" -ge "$QUIET_BUDGET" ]; }; then
			break
		fi
		wait_quiet "$what"
		b0=$(busy)
		timed "$out.try" "$@"
		b1=$(busy)
		read -r w u sy _ <"$out.try"
		sed -i "s/\$/ $(calc "($b1 - $b0 - $u - $sy) / $w")/" "$out.try"
		keep_best "$out.try" "$out"
	done
}

mem_avail_mb() { awk '$1=="MemAvailable:" { print int($2/1024) }' /proc/meminfo; }
shm_avail_mb() { df -B1M --output=avail "$SHM" | tail -n1 | tr -d ' '; }
# need_mb N WHAT: die unless N MiB of RAM and of tmpfs are free, beyond
# MIN_FREE_MB.
need_mb() {
	local m s
	m=$(mem_avail_mb) s=$(shm_avail_mb)
	if [ "$m" -lt $(($1 + MIN_FREE_MB)) ] || [ "$s" -lt $(($1 + MIN_FREE_MB)) ]; then
		die "$2 needs about $1 MiB of RAM in $SHM; available: $m MiB RAM, $s MiB in $SHM (lower RECEIVERS, DATA_MB or ROOM_DATA_MB)"
	fi
}

loop_new() { # SIZE: sets LOOP to a loop device over a new sparse file in $work
	local f
	f=$(mktemp "$work/loop.XXXXXX")
	truncate -s "$1" "$f"
	LOOP=$(losetup --find --show "$f")
	LOOPS+=("$LOOP")
}
loop_del() { # DEV: detach it and remove its file
	local f l
	local -a keep=()
	f=$(losetup -n -O BACK-FILE "$1")
	losetup -d "$1"
	rm -f "$f"
	for l in "${LOOPS[@]}"; do [ "$l" = "$1" ] || keep+=("$l"); done
	LOOPS=("${keep[@]}")
}

# The watchdog: this run's files live in RAM, beside other work. When
# available memory runs low, stop (the EXIT trap removes the lab, whose
# processes it kills, and every file) before the kernel picks a victim.
(
	while kill -0 $$ 2>/dev/null; do
		if [ "$(mem_avail_mb)" -lt "$MIN_FREE_MB" ]; then
			echo "$prog: FATAL: available memory is below MIN_FREE_MB=$MIN_FREE_MB MiB: stopping" >&2
			kill -TERM $$
			exit 0
		fi
		sleep 1
	done
) &
wdpid=$!

load_start=$(load)
info "build"
CGO_ENABLED=0 go build -trimpath -o "$bin" ./cmd/mtftpd
ver=$(git describe --tags --always --dirty 2>/dev/null || echo dev)

# ---------------------------------------------------------------- the data
# make_raw OUT SIZE DATA [dense]: a raw disk of SIZE bytes holding DATA
# bytes in extents of 1.5–12 MiB (4 KiB aligned, so most straddle chunk
# boundaries as a filesystem's do), spread evenly with holes between; one
# extent in three random bytes (compressed files, media), two in three the
# contents of real files under /usr. "dense": the same extents back to
# back, no holes. Sets EXTENTS.
EXT_KIB=(3072 6144 4608 9728 2048 12288 1536 7168)
EXTENTS=0
make_raw() {
	local out=$1 size=$2 data=$3 dense=${4:-} k n=0 sum=0 stride off len src soff
	local roff=0 foff=0 done=0
	while [ "$sum" -lt "$data" ]; do # how many extents
		sum=$((sum + EXT_KIB[n % ${#EXT_KIB[@]}] * 1024))
		n=$((n + 1))
	done
	stride=$((size / n / 4096 * 4096))
	rm -f "$out"
	truncate -s "$size" "$out"
	for ((k = 0; done < data; k++)); do
		len=$((EXT_KIB[k % ${#EXT_KIB[@]}] * 1024))
		[ $((done + len)) -le "$data" ] || len=$((data - done))
		if [ -n "$dense" ]; then
			off=$done
		else
			off=$((k * stride + (k * 7919 % 64) * 4096))
			[ $((len + 256 * 1024)) -le "$stride" ] || len=$((stride - 256 * 1024))
			[ $((off + len)) -le "$size" ] || die "make_raw: extent $k past the end"
		fi
		# the sources are read in turn, from their start again at their end
		if [ $((k % 3)) -eq 0 ]; then src=$work/rand.bin soff=$roff; else src=$work/files.bin soff=$foff; fi
		[ $((soff + len)) -le "$(stat -c %s "$src")" ] || soff=0
		if [ $((k % 3)) -eq 0 ]; then roff=$((soff + len)); else foff=$((soff + len)); fi
		dd if="$src" of="$out" bs=4096 skip=$((soff / 4096)) seek=$((off / 4096)) count=$((len / 4096)) \
			conv=notrunc status=none
		done=$((done + len))
	done
	EXTENTS=$k
}

need_mb $((RAW_GB * 1024 + 4 * DATA_MB + LARGE_GB * DATA_MB / RAW_GB)) "making the images"
info "data: $DATA_MB MiB of /usr files and random bytes"
# Real files, in a fixed order: libraries, binaries, text, compressed data.
(
	set +o pipefail
	find /usr/lib /usr/share -xdev -type f -size +1k -readable -print0 2>/dev/null | sort -z |
		xargs -0 cat 2>/dev/null | head -c "$DATA" >"$work/files.bin"
)
[ "$(stat -c %s "$work/files.bin")" -eq "$DATA" ] || die "only $(stat -c %s "$work/files.bin") bytes of files under /usr"
head -c $((DATA / 2 + 8 * MiB)) /dev/urandom >"$work/rand.bin"
make_raw "$work/issue.raw" "$RAW" "$DATA"
issue_extents=$EXTENTS
make_raw "$work/small.raw" "$SMALL" "$SMALL_DATA"
make_raw "$work/room.raw" "$RAW" "$ROOM_DATA"
room_extents=$EXTENTS
has_part create && make_raw "$work/dense.raw" "$DATA" "$DATA" dense
mkdir -p "$work/root/images"

# ---------------------------------------------------- create vs zstd -T0 -3
declare -A CR=() # CR[input,tool] = "wall user sys"; CRSZ[input,tool] = output bytes
declare -A CRSZ=()
create_row() { # NAME RAWFILE
	local name=$1 raw=$2
	best "$work/t.zstd" "create, $name" zstd -T0 -3 -q -f "$raw" -o "$work/out.zst"
	CR[$name,zstd]=$(cat "$work/t.zstd") CRSZ[$name,zstd]=$(stat -c %s "$work/out.zst")
	best "$work/t.create" "create, $name" "$bin" image create -q "$raw" -o "$work/out.img"
	CR[$name,create]=$(cat "$work/t.create") CRSZ[$name,create]=$(stat -c %s "$work/out.img")
}
if has_part create; then
	info "create: sparse raw ($RAW_GB GiB, $DATA_MB MiB of data)"
	create_row sparse "$work/issue.raw"
	info "create: the same disk fully allocated"
	cp --sparse=never "$work/issue.raw" "$work/full.raw"
	create_row full "$work/full.raw"
	rm -f "$work/full.raw"
	info "create: its data alone ($DATA_MB MiB, no zeros)"
	create_row dense "$work/dense.raw"
	rm -f "$work/out.zst" "$work/out.img" "$work/dense.raw"
fi
# The images (the large one only for the memory part; its raw disk is
# not kept). The pipeline's: zstd -T0 at its default level 3.
images="issue small room"
if has_part rss; then
	make_raw "$work/large.raw" "$LARGE" "$LARGE_DATA"
	images="$images large"
fi
rm -f "$work/files.bin" "$work/rand.bin"
for d in $images; do
	"$bin" image create -q "$work/$d.raw" -o "$work/root/images/$d.img"
	"$bin" image verify -q "$work/root/images/$d.img"
	"$bin" image info --json "$work/root/images/$d.img" >"$work/$d.info"
done
rm -f "$work/large.raw" "$work/small.raw"
zstd -T0 -3 -q -f "$work/room.raw" -o "$work/room.zst"
info_of() { jq -r ".$2" "$work/$1.info"; } # info_of IMAGE KEY
zst_size=$(stat -c %s "$work/room.zst")
img_size=$(info_of room file_size)
data_chunks=$(($(info_of room chunks) - $(info_of room holes)))
issue_size=$(info_of issue file_size)
room_sum=$(openssl dgst -sha256 -r "$work/room.raw" | cut -d' ' -f1)
info "room image: raw $RAW_GB GiB ($(mb "$(alloc "$work/room.raw")") MB allocated), zstd $(mb "$zst_size") MB, mtftpd $(mb "$img_size") MB ($data_chunks data chunks)"

# ---------------------------------------------------------------- the lab
lab_n=1
has_part room && lab_n=$RECEIVERS
info "lab: $lab_n clients"
bash $LAB -p $P up "$lab_n" >/dev/null
txbytes() { bash $LAB -p $P counters srv | awk '$1=="tx_bytes" { print $2 }'; }

# serve EXTRA-TOML: (re)start mtftpd in srv serving $work/root by TFTP
# and HTTP.
serve() {
	stop_pid "$srvpid"
	srvpid=
	cat >"$work/mtftpd.toml" <<EOF
[tftp]
listen = "0.0.0.0:69"
root = "$work/root"
[http]
listen = "0.0.0.0:80"
[log]
format = "json"
$1
EOF
	: >"$work/server.log"
	ip netns exec $P-srv "$bin" serve --config "$work/mtftpd.toml" >>"$work/server.log" 2>&1 &
	srvpid=$!
	for _ in $(seq 100); do
		grep -q "http mirror listening" "$work/server.log" && grep -q "tftp server listening" "$work/server.log" && return 0
		kill -0 "$srvpid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/server.log" >&2
	die "mtftpd did not start"
}
srv_cpu() { sed 's/^.*) //' "/proc/$srvpid/stat" | awk -v t="$CLK_TCK" '{ printf "%.2f\n", ($12+$13)/t }'; }
# image deploy in client 1
DEPLOY1=(ip netns exec "$P-c1" "$bin" image deploy)

# A session for one receiver starts as soon as it joined.
serve "[mtftp]
native_min_receivers = 1"

# ----------------------------------------------------------- one receiver
if has_part one; then
	need_mb $((RAW_GB * 1024 + 1024)) "the one-receiver part"
	info "one: network alone (get --multicast of the issue image, $REPEAT×)"
	rm -f "$work/t.net"
	for ((i = 0; i < REPEAT; i++)); do
		wait_quiet "one receiver"
		timed "$work/t.try" ip netns exec $P-c1 "$bin" get -q --multicast -o "$work/net.out" $SRV images/issue.img
		rm -f "$work/net.out"
		keep_best "$work/t.try" "$work/t.net"
	done
	info "one: device alone (dd of the raw disk to a loop device on tmpfs, buffered and O_DIRECT, $REPEAT× each)"
	for how in fsync direct; do
		rm -f "$work/t.dd.$how"
		for ((i = 0; i < REPEAT; i++)); do
			loop_new "$RAW"
			wait_quiet "one receiver"
			if [ $how = fsync ]; then
				timed "$work/t.try" dd if="$work/issue.raw" of="$LOOP" bs=4M conv=fsync status=none
			else
				timed "$work/t.try" dd if="$work/issue.raw" of="$LOOP" bs=4M oflag=direct conv=fsync status=none
			fi
			keep_best "$work/t.try" "$work/t.dd.$how"
			loop_del "$LOOP"
		done
	done
	info "one: image deploy --no-resume to a loop device on tmpfs ($REPEAT×)"
	rm -f "$work/t.dep"
	for ((i = 0; i < REPEAT; i++)); do
		loop_new "$RAW"
		wait_quiet "one receiver"
		timed "$work/t.try" "${DEPLOY1[@]}" --json --no-resume "$SRV" images/issue.img "$LOOP" >"$work/dep.json.try"
		[ "$(jq -r .via "$work/dep.json.try")" = multicast ] || die "one: deploy went via $(jq -r .via "$work/dep.json.try")"
		cmp -n "$RAW" "$work/issue.raw" "$LOOP" >/dev/null || die "one: the deployed loop device differs from the raw disk"
		if [ ! -s "$work/t.dep" ] || lt "$(cut -d' ' -f1 "$work/t.try")" "$(cut -d' ' -f1 "$work/t.dep")"; then
			mv "$work/dep.json.try" "$work/dep.json"
		fi
		keep_best "$work/t.try" "$work/t.dep"
		loop_del "$LOOP"
	done
fi

# -------------------------------------------------------------------- rss
declare -A RSS=() LIVE=()
if has_part rss; then
	need_mb $((LARGE_GB * DATA_MB / RAW_GB * 5 / 4)) "the memory part"
	for img in small issue large room; do
		info "rss: deploy --verify of the $img image to a sparse file ($REPEAT×)"
		RSS[$img]=0 LIVE[$img]=0
		for ((i = 0; i < REPEAT; i++)); do
			rm -f "$work/rss.disk"
			GODEBUG=gctrace=1 timed "$work/t.rss" "${DEPLOY1[@]}" -q --verify --no-resume "$SRV" "images/$img.img" "$work/rss.disk" 2>"$work/gc.log"
			r=$(cut -d' ' -f4 "$work/t.rss")
			[ "$r" -le "${RSS[$img]}" ] || RSS[$img]=$r
			# gctrace: "... 112->114->49 MB ...": heap at GC start, at its end, live
			r=$(grep -o '[0-9]*->[0-9]*->[0-9]* MB' "$work/gc.log" | awk -F'->' '{ split($3, a, " "); if (a[1] > m) m = a[1] } END { print m + 0 }')
			[ "$r" -le "${LIVE[$img]}" ] || LIVE[$img]=$r
		done
		[ "$img" != large ] || rm -f "$work/root/images/large.img"
	done
	# The disk holds the room image now: a deploy fetches the index, scans
	# the disk and needs nothing more.
	info "rss: what the index fetch of the room image costs on the wire"
	tx0=$(txbytes)
	"${DEPLOY1[@]}" -q "$SRV" images/room.img "$work/rss.disk"
	idx_tftp=$(($(txbytes) - tx0))
	tx0=$(txbytes)
	"${DEPLOY1[@]}" -q --http "http://$SRV" "$SRV" images/room.img "$work/rss.disk"
	idx_http=$(($(txbytes) - tx0))
	rm -f "$work/rss.disk"
fi

# ------------------------------------------------------------------- room
declare -A R=() # R[variant,key]
if has_part room; then
	rm -f "$work/issue.raw" "$work/small.raw" "$work/root/images/issue.img" "$work/root/images/small.img"
	# Each client disk: a sparse file holding the image's data chunks
	# (mtftpd writes whole 1 MiB chunks; zstd --sparse skips zero runs).
	need_mb $((RECEIVERS * data_chunks + 1024)) "the room ($RECEIVERS disks of $data_chunks MiB of data)"
	stop_pid "$srvpid"
	srvpid=
	mkdir -p "$work/disks"

	# room_end VARIANT T0 TX0 B0 S0 OURCPU: the figures common to both tools.
	room_end() {
		local v=$1 t1 tx1 b1 s1
		t1=$(now) tx1=$(txbytes) b1=$(busy) s1=$(steal)
		R[$v,time]=$(calc "$t1 - $2")
		R[$v,wire]=$((tx1 - $3))
		R[$v,busy]=$(calc "$b1 - $4" 1)
		R[$v,steal]=$(calc "$s1 - $5" 1)
		R[$v,cap]=$(calc "(${R[$v,time]}) * $(nproc)" 1)
	}
	# rusage DIR: receivers' CPU seconds, largest and median peak RSS.
	rusage() {
		local v=$1 d=$2
		R[$v,cpu]=$(cat "$d"/[0-9]*.time | awk '$1 ~ /^[0-9.]+$/ { s += $2 + $3 } END { printf "%.1f", s }')
		read -r "R[$v,rss]" "R[$v,rssmed]" < <(awk '$4 ~ /^[0-9]+$/ { print $4 }' "$d"/[0-9]*.time | sort -n |
			awk '{ v[NR] = $1 } END { print v[NR]+0, v[int((NR+1)/2)]+0 }')
	}

	v=pipe
	wait_quiet "room, pipeline"
	R[$v,other]=$QUIET_U
	info "room: udp-sender → $RECEIVERS × udp-receiver | zstd -d --sparse, then SHA-256 of each disk"
	d=$work/p
	mkdir -p "$d"
	tx0=$(txbytes) b0=$(busy) s0=$(steal) t0=$(now)
	ip netns exec $P-srv timeout -k 5 "$ROOM_TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$d/sender.time" \
		udp-sender --file "$work/room.zst" --interface eth0 --min-receivers "$RECEIVERS" --max-wait 120 --nokbd \
		--mcast-data-address 239.255.9.9 --mcast-rdv-address 239.255.9.8 >"$d/sender.log" 2>&1 &
	pids=($!)
	for i in $(seq "$RECEIVERS"); do
		# shellcheck disable=SC2016 # expanded by the inner bash
		ip netns exec $P-c$i timeout -k 5 "$ROOM_TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$d/$i.time" bash -c '
			set -o pipefail
			udp-receiver --nokbd --interface eth0 --mcast-rdv-address 239.255.9.8 2>"$2.log" |
				zstd -d -q --sparse -o "$1" || exit 1
			date +%s.%N >"$2.written"
			openssl dgst -sha256 -r "$1" | cut -d" " -f1 >"$2.sum"
			date +%s.%N >"$2.verified"' _ "$work/disks/d$i" "$d/$i" &
		pids+=($!)
	done
	wait "${pids[@]}" || true
	room_end $v "$t0" "$tx0" "$b0" "$s0"
	w=$(cat "$d"/*.written 2>/dev/null | sort -n | tail -n1)
	R[$v,written]=$(calc "${w:-$(now)} - $t0")
	R[$v,ok]=0
	for i in $(seq "$RECEIVERS"); do
		[ "$(cat "$d/$i.sum" 2>/dev/null)" = "$room_sum" ] && R[$v,ok]=$((R[$v,ok] + 1))
	done
	rusage $v "$d"
	R[$v,srvcpu]=$(awk '{ printf "%.1f", $2 + $3 }' "$d/sender.time" 2>/dev/null || echo "?")
	R[$v,ratio]=$(calc "${R[$v,wire]} / $zst_size" 3)
	info "room: pipeline ${R[$v,time]} s (written ${R[$v,written]} s), ${R[$v,ok]}/$RECEIVERS verified, wire ${R[$v,ratio]}×"
	rm -rf "$work/disks" && mkdir -p "$work/disks"

	serve "[[mtftp.start]]
files = \"images/*\"
min_receivers = $RECEIVERS
max_wait = \"120s\""
	for v in tftp http; do
		extra=()
		[ $v = http ] && extra=(--http "http://$SRV")
		wait_quiet "room, mtftpd ($v index)"
		R[$v,other]=$QUIET_U
		info "room: $RECEIVERS × mtftpd image deploy --verify --no-resume ${extra[*]}"
		d=$work/m-$v
		mkdir -p "$d"
		sessions0=$(grep -c '"mtftp: native session"' "$work/server.log" || true)
		c0=$(srv_cpu) tx0=$(txbytes) b0=$(busy) s0=$(steal) t0=$(now)
		pids=()
		for i in $(seq "$RECEIVERS"); do
			# shellcheck disable=SC2016 # expanded by the inner bash
			ip netns exec $P-c$i timeout -k 5 "$ROOM_TIMEOUT" /usr/bin/time -f '%e %U %S %M' -o "$d/$i.time" bash -c '
				d=$1 out=$2
				shift 2
				"$@" >"$out.json" 2>"$out.err" || exit 1
				date +%s.%N >"$out.verified"' _ "$work/disks/d$i" "$d/$i" \
				"$bin" image deploy --json --verify --no-resume --timeout 60s "${extra[@]}" "$SRV" images/room.img "$work/disks/d$i" &
			pids+=($!)
		done
		wait "${pids[@]}" || true
		c1=$(srv_cpu)
		room_end $v "$t0" "$tx0" "$b0" "$s0"
		R[$v,srvcpu]=$(calc "$c1 - $c0" 1)
		R[$v,ok]=0 R[$v,written]=0
		for i in $(seq "$RECEIVERS"); do
			f=$d/$i
			if [ -s "$f.verified" ] && [ "$(jq -r .via "$f.json" 2>/dev/null)" = multicast ]; then
				R[$v,ok]=$((R[$v,ok] + 1))
				# when this disk was written: its end less its verify phase
				w=$(calc "$(cat "$f.verified") - $t0 - $(jq -r '.phases.verify // 0' "$f.json")")
				lt "${R[$v,written]}" "$w" && R[$v,written]=$w
			else
				warn "c$i ($v index) failed: $(tail -n 2 "$f.err" 2>/dev/null | tr '\n' ' ')"
			fi
		done
		R[$v,verify]=$(cat "$d"/*.json 2>/dev/null | jq -s '[.[].phases.verify // 0] | max // 0 | . * 100 | round / 100')
		R[$v,index]=$(cat "$d"/*.json 2>/dev/null | jq -s '[.[].phases.index // 0] | max // 0 | . * 100 | round / 100')
		R[$v,mstats]=$(cat "$d"/*.json 2>/dev/null | jq -rs '[.[].multicast // {}] | "\(map(.naks // 0) | add) NAKs, \(map(.rejoins // 0) | add) rejoins, \(map(.moves // 0) | add) moves, \(map(.rebuilt // 0) | add) shards rebuilt from parity"')
		rusage $v "$d"
		sess=$(jq -c 'select(.message == "mtftp: native session")' "$work/server.log" 2>/dev/null | tail -n +$((sessions0 + 1)))
		R[$v,sessions]=$(printf '%s' "$sess" | grep -c . || true)
		R[$v,logwire]=$(printf '%s\n' "$sess" | jq -s 'map(.wire_bytes) | add // 0')
		R[$v,recv]=$(printf '%s\n' "$sess" | jq -s 'map(.receivers) | add // 0')
		R[$v,done]=$(printf '%s\n' "$sess" | jq -s 'map(.completed) | add // 0')
		R[$v,sessdetail]=$(printf '%s\n' "$sess" | jq -rs 'map("\(.data_shards) data shards, \(.repair_shards) repair shards, \(.passes) pass(es), \(.naks) NAKs, \(.repair_rounds) repair rounds, \(.rate_MBps * 10 | round / 10) MB/s, \(.duration / 10 | round / 100) s") | join("; ")')
		R[$v,ratio]=$(calc "${R[$v,wire]} / $img_size" 3)
		R[$v,logratio]=$(calc "${R[$v,logwire]} / $img_size" 3)
		R[$v,cmp]=0
		for i in 1 $(((RECEIVERS + 1) / 2)) "$RECEIVERS"; do
			cmp -n "$RAW" "$work/room.raw" "$work/disks/d$i" >/dev/null 2>&1 && R[$v,cmp]=$((R[$v,cmp] + 1))
		done
		info "room: mtftpd ($v index) ${R[$v,time]} s, ${R[$v,ok]}/$RECEIVERS verified, wire ${R[$v,ratio]}× (stream ${R[$v,logratio]}×)"
		rm -rf "$work/disks" && mkdir -p "$work/disks"
	done
fi
stop_pid "$srvpid"
srvpid=

# ----------------------------------------------------------------- report
info "report: $OUT"
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
pass() { awk -v v="$1" -v t="$2" -v d="$3" 'BEGIN { if ((d == "le" && v <= t) || (d == "ge" && v >= t)) print "met"; else print "**missed**" }'; }
{
	cat <<EOF
# Disk image benchmarks

\`make bench-image\` (scripts/bench-image.sh) on $(date -u +%F), mtftpd $ver,
kernel $(uname -r), $(nproc) CPUs ($cpu_model), $(awk '$1=="MemTotal:" { printf "%.0f", $2/1048576 }' /proc/meminfo) GiB RAM.
The machine is shared with other work (load average $load_start at the
start, $(load) at the end). Before each timed part the script waits (up to
${QUIET_WAIT} s) until other work uses less than $BUSY_MAX CPUs; the CPU
seconds below are this run's own.

## Configuration, and why the room's image holds less data

The issue asks for a 4 GiB-raw image holding about 1 GiB of data, deployed
to 50 receivers. \`create\`, one receiver and memory use such an image here
(the "issue image", $RAW_GB GiB raw, $DATA_MB MiB of data). The room cannot: every
receiver's disk is on this one machine, and 50 disks × 1 GiB of written data
is 50 GiB, twice this machine's RAM (tmpfs); written to its virtual disk
instead, the run would measure that disk, not the deploy. So the room keeps
the raw size and the receivers and lowers the data (the "room image"):

| | issue image (create, one, rss) | room image (room) | the issue |
|---|---|---|---|
| raw size | $RAW_GB GiB | $RAW_GB GiB | 4 GiB |
| data | $DATA_MB MiB in $issue_extents extents | $ROOM_DATA_MB MiB in $room_extents extents | about 1 GiB |
| mtftpd image | $(mb "$issue_size") MB, $(($(info_of issue chunks) - $(info_of issue holes))) data chunks | $(mb "$img_size") MB, $data_chunks data chunks | |
| receivers | 1 | $RECEIVERS | 50 |
| client disk | loop device on tmpfs (one), sparse file in tmpfs (rss) | sparse file in tmpfs | loop device on tmpfs |

The small image of the memory part is $SMALL_GB GiB raw with $(calc "$SMALL_DATA / $MiB" 0) MiB of data
(same density). Extents are 1.5–12 MiB, 4 KiB aligned, spread evenly with
holes between: one in three is random bytes (compressed files, media), two
in three are the contents of real files under /usr/lib and /usr/share
(libraries, binaries, text). Chunks are 1 MiB (the format's default).
The room image as \`zstd -T0 -3\` (the pipeline's image) is $zst_size bytes; as an
mtftpd image $img_size bytes ($(calc "$img_size / $zst_size" 3)× the zstd file).

EOF
	if has_part room; then
		rw() { # LABEL KEY [SUFFIX]
			printf '| %s | %s%s | %s%s | %s%s |\n' "$1" "${R[pipe,$2]:-}" "${3:-}" "${R[tftp,$2]:-}" "${3:-}" "${R[http,$2]:-}" "${3:-}"
		}
		cat <<EOF
## A room of $RECEIVERS: FOG/Clonezilla's pipeline vs \`image deploy\`

Time runs from launching the server side and the $RECEIVERS receivers to the
last disk holding the verified image. It includes the wait for all
$RECEIVERS to join (udp-sender \`--min-receivers\`, mtftpd's
\`[[mtftp.start]] min_receivers\`). The pipeline has no verification of its
own: each client checks its disk after \`zstd -d\` ends with
\`openssl dgst -sha256\` (SHA-NI; coreutils' \`sha256sum\` is about 3× slower
here), against the raw disk's digest. mtftpd's \`--verify\` re-reads the whole
disk and checks the image digest: data chunks by SHA-256, holes by checking
for zeros. "Written" is when the last disk was complete, before its
verification. "Wire" is the server's eth0 TX bytes during the run (frames:
Ethernet, IP and UDP headers included), ÷ the file that tool sends; "stream"
is the multicast session's own count (\`wire_bytes\` in its log line).
mtftpd ran twice: as is (the index by TFTP) and with \`--http\` (the index
by an HTTP Range request to the server's mirror).

| | pipeline (udpcast + zstd) | mtftpd | mtftpd --http |
|---|---|---|---|
EOF
		rw "time until all verified" time " s"
		rw "time until all written" written " s"
		rw "disks verified" ok " / $RECEIVERS"
		rw "server eth0 TX bytes" wire
		rw "eth0 TX ÷ stored size" ratio "×"
		printf '| multicast stream ÷ stored size | | %s× | %s× |\n' "${R[tftp,logratio]}" "${R[http,logratio]}"
		rw "CPU seconds, all receivers" cpu
		rw "CPU seconds, server" srvcpu
		rw "machine busy CPU seconds (of wall × CPUs)" busy
		rw "wall × CPUs" cap
		rw "stolen by the hypervisor, CPU seconds" steal
		rw "peak RSS of one receiver, largest (kB)" rss
		rw "peak RSS of one receiver, median (kB)" rssmed
		rw "other work's CPUs just before (2 s sample)" other
		t_ratio=$(calc "${R[tftp,time]} / ${R[pipe,time]}" 2)
		h_ratio=$(calc "${R[http,time]} / ${R[pipe,time]}" 2)
		tw_ratio=$(calc "${R[tftp,time]} / ${R[pipe,written]}" 2)
		hw_ratio=$(calc "${R[http,time]} / ${R[pipe,written]}" 2)
		ww_ratio=$(calc "${R[tftp,written]} / ${R[pipe,written]}" 2)
		hww_ratio=$(calc "${R[http,written]} / ${R[pipe,written]}" 2)
		cat <<EOF

Pipeline receivers: the peak RSS is the largest of bash, udp-receiver, zstd
and openssl in each client. mtftpd: longest index phase ${R[tftp,index]} s (TFTP) and
${R[http,index]} s (HTTP); longest verify phase ${R[tftp,verify]} s and ${R[http,verify]} s;
sessions logged ${R[tftp,sessions]} and ${R[http,sessions]} (receivers counted ${R[tftp,recv]} and ${R[http,recv]},
completed ${R[tftp,done]} and ${R[http,done]}); ${R[tftp,mstats]} (TFTP index run);
${R[http,mstats]} (HTTP index run). Server session log: ${R[tftp,sessdetail]} (TFTP
index run); ${R[http,sessdetail]} (HTTP index run). \`cmp\` of three disks against the raw
disk: ${R[tftp,cmp]} and ${R[http,cmp]} of 3 identical.

* **Time**: mtftpd took $t_ratio× the pipeline's time until verified ($h_ratio× with
  --http); target ≤ 0.5×: $(pass "$t_ratio" 0.5 le) ($(pass "$h_ratio" 0.5 le) with --http). Against the
  pipeline's time without any verification, mtftpd with its verification
  took $tw_ratio× ($hw_ratio×); until all written, $ww_ratio× ($hww_ratio×).
* **Wire**: on eth0, ${R[tftp,ratio]}× the stored size ($(pass "${R[tftp,ratio]}" 1.05 le)), ${R[http,ratio]}× with
  --http ($(pass "${R[http,ratio]}" 1.05 le)); the multicast stream alone, ${R[tftp,logratio]}× and ${R[http,logratio]}×
  ($(pass "${R[tftp,logratio]}" 1.05 le), $(pass "${R[http,logratio]}" 1.05 le)). Target ≤ 1.05×.
EOF
		if has_part rss; then
			cat <<EOF
* **Where eth0 bytes beyond the stream go.** Every receiver fetches the
  index by unicast before it joins. Measured alone (a deploy to a disk that
  already holds the room image, so nothing else is fetched): $idx_tftp bytes by
  TFTP, $idx_http by HTTP, for an index of $(($(info_of room file_size) - $(info_of room data_size))) bytes. By TFTP the deploy reads
  about 1 MiB whatever the index size: the TFTP client (tftp/client.go)
  buffers 1 MiB before it hands anything to the index reader, which stops
  the transfer only after that. × $RECEIVERS receivers that is $(mb $((idx_tftp * RECEIVERS))) MB
  ($(calc "100 * $idx_tftp * $RECEIVERS / $img_size" 1) % of this image; $(calc "100 * $idx_tftp * $RECEIVERS / $issue_size" 1) % of the issue image); by HTTP
  $(mb $((idx_http * RECEIVERS))) MB ($(calc "100 * $idx_http * $RECEIVERS / $img_size" 1) %, and $(calc "100 * $idx_http * $RECEIVERS / $issue_size" 1) % of the issue image): the index grows with the raw
  size, not the data, so it weighs more in this thin room image.
EOF
		fi
		echo
	fi
	if has_part create; then
		cat <<EOF
## \`image create\` vs \`zstd -T0 -3\`

The issue image, same input file for both, in RAM (tmpfs), output to tmpfs,
fastest of $REPEAT or more runs, each started on a quiet machine; MB/s of raw
input. CPU seconds are user + system; "other" is the CPUs other work kept
busy on average during the run shown.

| input | tool | wall | CPU s | other | MB/s raw | output | create ÷ zstd: MB/s (CPU) |
|---|---|---|---|---|---|---|---|
EOF
		for row in "sparse:$RAW:raw disk, holes unallocated" "full:$RAW:same disk fully allocated" "dense:$DATA:its data alone"; do
			IFS=: read -r name bytes label <<<"$row"
			read -r zw zu zs _ zo <<<"${CR[$name,zstd]}"
			read -r cw cu cs _ co <<<"${CR[$name,create]}"
			r=$(calc "$zw / $cw" 2)
			echo "| $label ($(mb "$bytes") MB) | zstd -T0 -3 | $zw s | $(calc "$zu + $zs" 1) | $zo | $(calc "$bytes / $zw / 1e6" 0) | $(mb "${CRSZ[$name,zstd]}") MB | |"
			echo "| | image create | $cw s | $(calc "$cu + $cs" 1) | $co | $(calc "$bytes / $cw / 1e6" 0) | $(mb "${CRSZ[$name,create]}") MB | **${r}×** ($(pass "$r" 0.8 ge)); CPU $(calc "($cu + $cs) / ($zu + $zs)" 2)× |"
		done
		echo
		echo "Target: ≥ 0.8× zstd -T0's MB/s."
		echo
	fi
	if has_part one; then
		read -r nw _ <"$work/t.net"
		read -r dfw _ <"$work/t.dd.fsync"
		read -r ddw _ <"$work/t.dd.direct"
		read -r pw _ <"$work/t.dep"
		dw=$(awk -v a="$dfw" -v b="$ddw" 'BEGIN { print (a < b) ? a : b }')
		net_mbs=$(calc "$RAW / $nw / 1e6" 0)
		dd_mbs=$(calc "$RAW / $dw / 1e6" 0)
		dep_mbs=$(calc "$RAW / $pw / 1e6" 0)
		low=$(awk -v a="$net_mbs" -v b="$dd_mbs" 'BEGIN { print (a < b) ? a : b }')
		lowname=$(awk -v a="$net_mbs" -v b="$dd_mbs" 'BEGIN { print (a < b) ? "the network" : "the device" }')
		r=$(calc "$dep_mbs / $low" 2)
		phases=$(jq -r '.phases | to_entries | map("\(.key) \(.value * 100 | round / 100) s") | join(", ")' "$work/dep.json")
		cat <<EOF
## One receiver: deploy vs the device and the network alone

The issue image. MB/s of the raw disk ($RAW_GB GiB), best of $REPEAT, each on a
fresh loop device over a sparse file in tmpfs. The network figure is how
fast the image file ($(mb "$issue_size") MB) comes by \`get --multicast\` from the same
server in the lab, expressed per raw byte (raw size ÷ its time). Times run
from launching the command and include joining the session (the server
starts it as soon as one receiver joined).

| | wall | MB/s of raw disk |
|---|---|---|
| device alone: \`dd if=raw of=/dev/loopN bs=4M conv=fsync\` | $dfw s | $(calc "$RAW / $dfw / 1e6" 0) |
| device alone: the same with \`oflag=direct\` | $ddw s | $(calc "$RAW / $ddw / 1e6" 0) |
| network alone: \`get --multicast\` of the image file | $nw s | $net_mbs ($(calc "$issue_size / $nw / 1e6" 0) MB/s of image) |
| \`image deploy --no-resume\` to the loop device | $pw s | $dep_mbs |

The device limit is the faster dd. Deploy phases (its best run): $phases.
Deploy ÷ the lower limit ($lowname, $low MB/s): **${r}×** (target ≥ 0.8×: $(pass "$r" 0.8 ge)).

EOF
	fi
	if has_part rss; then
		r=$(calc "${RSS[issue]} / ${RSS[small]}" 3)
		rl=$(calc "${RSS[large]} / ${RSS[issue]}" 3)
		cat <<EOF
## Receiver memory: $SMALL_GB GiB vs $RAW_GB GiB raw (and $LARGE_GB GiB)

Peak RSS (\`/usr/bin/time\` maximum resident set size) of one
\`image deploy --verify --no-resume\` into a sparse file in tmpfs, and the
largest live heap the Go runtime reported after a GC
(\`GODEBUG=gctrace=1\`), the largest of $REPEAT runs each. Small, issue and
large have the same density.

| image | raw | data | stored | peak RSS | largest live heap |
|---|---|---|---|---|---|
| small | $SMALL_GB GiB | $(calc "$SMALL_DATA / $MiB" 0) MiB | $(mb "$(info_of small file_size)") MB | ${RSS[small]} kB | ${LIVE[small]} MiB |
| issue | $RAW_GB GiB | $DATA_MB MiB | $(mb "$issue_size") MB | ${RSS[issue]} kB | ${LIVE[issue]} MiB |
| large | $LARGE_GB GiB | $(calc "$LARGE_DATA / $MiB" 0) MiB | $(mb "$(info_of large file_size)") MB | ${RSS[large]} kB | ${LIVE[large]} MiB |
| room | $RAW_GB GiB | $ROOM_DATA_MB MiB | $(mb "$img_size") MB | ${RSS[room]} kB | ${LIVE[room]} MiB |

$RAW_GB GiB ÷ $SMALL_GB GiB at the same density: **${r}×** (target within 10 %: $(awk -v r="$r" 'BEGIN { print (r <= 1.1 && r >= 0.9) ? "met" : "**missed**" }')).
$LARGE_GB GiB ÷ $RAW_GB GiB: ${rl}×.

EOF
	fi
	cat <<EOF
## Commands

\`\`\`
RECEIVERS=$RECEIVERS RAW_GB=$RAW_GB DATA_MB=$DATA_MB ROOM_DATA_MB=$ROOM_DATA_MB SMALL_GB=$SMALL_GB LARGE_GB=$LARGE_GB REPEAT=$REPEAT scripts/bench-image.sh
# images
zstd -T0 -3 -q -f room.raw -o room.zst
mtftpd image create -q room.raw -o root/images/room.img
# pipeline: server side (namespace srv), then each client
udp-sender --file room.zst --interface eth0 --min-receivers $RECEIVERS --max-wait 120 --nokbd \\
    --mcast-data-address 239.255.9.9 --mcast-rdv-address 239.255.9.8
udp-receiver --nokbd --interface eth0 --mcast-rdv-address 239.255.9.8 | zstd -d -q --sparse -o DISK
openssl dgst -sha256 -r DISK
# mtftpd: server (mtftpd.toml: tftp.root = root, http.listen = "0.0.0.0:80", plus
#   [[mtftp.start]]
#   files = "images/*"
#   min_receivers = $RECEIVERS
#   max_wait = "120s"
# ), then each client (and again with --http http://$SRV)
mtftpd serve --config mtftpd.toml
mtftpd image deploy --json --verify --no-resume --timeout 60s $SRV images/room.img DISK
# one receiver (server: [mtftp] native_min_receivers = 1), the issue image
mtftpd get -q --multicast -o net.out $SRV images/issue.img
dd if=issue.raw of=/dev/loopN bs=4M conv=fsync     # and with oflag=direct
mtftpd image deploy --json --no-resume $SRV images/issue.img /dev/loopN
# memory
GODEBUG=gctrace=1 /usr/bin/time -f %M mtftpd image deploy -q --verify --no-resume $SRV images/small.img disk.raw
\`\`\`

Waits for a quiet machine (those longer than 4 s):
EOF
	for l in "${QUIET_LOG[@]}"; do echo "* $l"; done
	cat <<EOF

## What limits these numbers

* **Two cores for everything.** The server, all $RECEIVERS receivers and the
  kernel's multicast delivery to $RECEIVERS sockets over $RECEIVERS veths share the
  machine's $(nproc) CPUs; in a room each machine has its own. The room times
  are CPU time spread over two cores: the receivers' CPU seconds explain them
  more than the network does.
* **The pipeline decompresses and hashes the whole raw disk in every
  client** ($RAW_GB GiB each, holes included: zstd and udpcast do not know
  where the holes are); mtftpd punches the holes and checks them for zeros.
* **Image create** is bound by the zstd encoder's CPU: klauspost/compress in
  Go against the C zstd (see docs/image-format.md).
* **One receiver** on tmpfs: the device limit is memory bandwidth through
  the loop driver; the network limit is mtftpd's own native stream in the
  lab (veth, one receiver, rate discovered from loss), so deploy ÷ network
  is the cost of zeroing the holes, decoding, checking and writing on top of
  receiving.
EOF
} >"$OUT"
info "done: $OUT"
