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
# Results: the run as JSON in bench-out/image-YYYYmmdd-HHMMSS.json (fields:
# docs/bench-json.md), rendered to BENCH_OUT by `mtftpd bench report image`
# (bench/report/image.md.tmpl). Paragraphs written by hand between
# <!-- notes room --> and <!-- /notes room --> (and rss) in the previous
# BENCH_OUT are kept.
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
for t in ip zstd openssl jq losetup cmp dd timeout go; do
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

# Bash has no floating point: calc and lt ask jq (the report's figures
# are computed by mtftpd bench report; these are the measurement's own).
now() { date +%s.%N; }
calc() { jq -n "($1) * pow(10; ${2:-2}) | round / pow(10; ${2:-2})"; } # calc EXPR [DECIMALS]
mb() { calc "$1 / 1e6" 1; }                        # bytes -> MB
alloc() { du -B1 "$1" | cut -f1; }                 # allocated bytes of a file
load() { cut -d' ' -f1-3 /proc/loadavg; }
lt() { jq -en "$1 < $2" >/dev/null; }
# busy: CPU seconds the whole machine spent busy so far (all CPUs), and
# steal: those the hypervisor gave to others while we wanted them (the
# first line of /proc/stat: cpu user nice system idle iowait irq softirq steal).
busy() {
	local _c us ni sy _i _w irq sirq _rest
	read -r _c us ni sy _i _w irq sirq _rest </proc/stat
	calc "$((us + ni + sy + irq + sirq)) / $CLK_TCK"
}
steal() {
	local _c _1 _2 _3 _4 _5 _6 _7 st _rest
	read -r _c _1 _2 _3 _4 _5 _6 _7 st _rest </proc/stat
	calc "$st / $CLK_TCK"
}
# pid_cpu PID: user + system seconds of PID (fields 14 and 15 of
# /proc/PID/stat; comm may hold spaces).
pid_cpu() {
	local s f
	s=$(<"/proc/$1/stat")
	read -r -a f <<<"${s##*) }"
	calc "$((f[11] + f[12])) / $CLK_TCK"
}
# meminfo KEY: a /proc/meminfo figure in kB.
meminfo() {
	local k v _u
	while read -r k v _u; do [ "$k" != "$1:" ] || { echo "$v"; return 0; }; done </proc/meminfo
	die "no $1 in /proc/meminfo"
}
# timed_json FILE: a "wall user sys maxrss_kB [other]" line (timed, best)
# as bench.Timed's JSON.
timed_json() {
	jq -R 'split(" ") | map(select(. != "") | tonumber) |
		{wall_seconds: .[0], user_seconds: .[1], sys_seconds: .[2], max_rss_kib: .[3]} + (if length > 4 then {other_cpus: .[4]} else {} end)' "$1"
}
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

mem_avail_mb() { echo $(($(meminfo MemAvailable) / 1024)); }
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
declare -A EXT=() RAWB=() DATAB=() # per image: extents, raw and data bytes
raw_image() { # NAME SIZE DATA: make_raw $work/NAME.raw, noted for the report
	make_raw "$work/$1.raw" "$2" "$3"
	EXT[$1]=$EXTENTS RAWB[$1]=$2 DATAB[$1]=$3
}
raw_image issue "$RAW" "$DATA"
raw_image small "$SMALL" "$SMALL_DATA"
raw_image room "$RAW" "$ROOM_DATA"
has_part create && make_raw "$work/dense.raw" "$DATA" "$DATA" dense
mkdir -p "$work/root/images"

# ---------------------------------------------------- create vs zstd -T0 -3
# create_row NAME RAWFILE BYTES: one line of create.jsonl (bench.ImageCrow)
create_row() {
	local name=$1 raw=$2
	best "$work/t.zstd" "create, $name" zstd -T0 -3 -q -f "$raw" -o "$work/out.zst"
	best "$work/t.create" "create, $name" "$bin" image create -q "$raw" -o "$work/out.img"
	jq -cn --arg in "$name" --argjson b "$3" --argjson z "$(timed_json "$work/t.zstd")" --argjson c "$(timed_json "$work/t.create")" \
		--argjson zs "$(stat -c %s "$work/out.zst")" --argjson cs "$(stat -c %s "$work/out.img")" \
		'{input: $in, bytes: $b, zstd: $z, zstd_size: $zs, create: $c, create_size: $cs}' >>"$work/create.jsonl"
}
if has_part create; then
	info "create: sparse raw ($RAW_GB GiB, $DATA_MB MiB of data)"
	create_row sparse "$work/issue.raw" "$RAW"
	info "create: the same disk fully allocated"
	cp --sparse=never "$work/issue.raw" "$work/full.raw"
	create_row full "$work/full.raw" "$RAW"
	rm -f "$work/full.raw"
	info "create: its data alone ($DATA_MB MiB, no zeros)"
	create_row dense "$work/dense.raw" "$DATA"
	rm -f "$work/out.zst" "$work/out.img" "$work/dense.raw"
fi
# The images (the large one only for the memory part; its raw disk is
# not kept). The pipeline's: zstd -T0 at its default level 3.
images="issue small room"
if has_part rss; then
	raw_image large "$LARGE" "$LARGE_DATA"
	images="$images large"
fi
rm -f "$work/files.bin" "$work/rand.bin"
for d in $images; do
	"$bin" image create -q "$work/$d.raw" -o "$work/root/images/$d.img"
	"$bin" image verify -q "$work/root/images/$d.img"
	"$bin" image info --json "$work/root/images/$d.img" >"$work/$d.info"
	jq --argjson raw "${RAWB[$d]}" --argjson data "${DATAB[$d]}" --argjson ext "${EXT[$d]}" \
		'{raw_bytes: $raw, data_bytes: $data, extents: $ext} + {file_size, data_size, chunks, holes}' "$work/$d.info" >"$work/$d.fig"
done
rm -f "$work/large.raw" "$work/small.raw"
zstd -T0 -3 -q -f "$work/room.raw" -o "$work/room.zst"
info_of() { jq -r ".$2" "$work/$1.info"; } # info_of IMAGE KEY
zst_size=$(stat -c %s "$work/room.zst")
img_size=$(info_of room file_size)
data_chunks=$(($(info_of room chunks) - $(info_of room holes)))
room_sum=$(openssl dgst -sha256 -r "$work/room.raw" | cut -d' ' -f1)
info "room image: raw $RAW_GB GiB ($(mb "$(alloc "$work/room.raw")") MB allocated), zstd $(mb "$zst_size") MB, mtftpd $(mb "$img_size") MB ($data_chunks data chunks)"

# ---------------------------------------------------------------- the lab
lab_n=1
has_part room && lab_n=$RECEIVERS
info "lab: $lab_n clients"
bash $LAB -p $P up "$lab_n" >/dev/null
txbytes() { bash $LAB -p $P counters srv | sed -n 's/^tx_bytes[[:space:]]*//p'; }

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
srv_cpu() { pid_cpu "$srvpid"; }
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
	jq -n --argjson net "$(timed_json "$work/t.net")" --argjson f "$(timed_json "$work/t.dd.fsync")" \
		--argjson d "$(timed_json "$work/t.dd.direct")" --argjson dep "$(timed_json "$work/t.dep")" \
		--argjson ph "$(jq '.phases | to_entries | map({name: .key, seconds: .value})' "$work/dep.json")" \
		'{net: $net, dd_fsync: $f, dd_direct: $d, deploy: $dep, deploy_phases: $ph}' >"$work/one.json"
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
			r=$(grep -o '[0-9]*->[0-9]*->[0-9]* MB' "$work/gc.log" | sed 's/.*->//; s/ MB$//' | sort -n | tail -n1)
			[ "${r:-0}" -le "${LIVE[$img]}" ] || LIVE[$img]=$r
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
	for img in small issue large room; do
		jq -cn --arg i "$img" --argjson r "${RSS[$img]}" --argjson l "${LIVE[$img]}" '{($i): {peak_rss_kib: $r, live_heap_mib: $l}}'
	done | jq -s --argjson t "$idx_tftp" --argjson h "$idx_http" 'add + {index_tftp_bytes: $t, index_http_bytes: $h}' >"$work/rss.json"
fi

# ------------------------------------------------------------------- room
if has_part room; then
	rm -f "$work/issue.raw" "$work/small.raw" "$work/root/images/issue.img" "$work/root/images/small.img"
	# Each client disk: a sparse file holding the image's data chunks
	# (mtftpd writes whole 1 MiB chunks; zstd --sparse skips zero runs).
	need_mb $((RECEIVERS * data_chunks + 1024)) "the room ($RECEIVERS disks of $data_chunks MiB of data)"
	stop_pid "$srvpid"
	srvpid=
	mkdir -p "$work/disks"

	# room_end VARIANT T0 TX0 B0 S0 DIR: the figures common to both tools
	# (bench.ImageRoomRun) in $work/room-VARIANT.json; the receivers'
	# /usr/bin/time lines in DIR are "wall user sys maxrss_kB", after a
	# "Command exited ..." line when one failed.
	room_end() {
		local v=$1 t1 tx1 b1 s1
		t1=$(now) tx1=$(txbytes) b1=$(busy) s1=$(steal)
		{ cat "$6"/[0-9]*.time 2>/dev/null || true; } | jq -Rn --argjson t "$(calc "$t1 - $2")" --argjson w $((tx1 - $3)) \
			--argjson b "$(calc "$b1 - $4" 1)" --argjson s "$(calc "$s1 - $5" 1)" --argjson o "$OTHER" '
			[inputs | select(test("^[0-9.]+ ")) | split(" ") | map(tonumber)] as $r | ($r | map(.[3]) | sort) as $rss |
			{seconds: $t, wire_bytes: $w, busy_cpu_seconds: $b, steal_cpu_seconds: $s, other_cpus: $o,
			 receivers_cpu_seconds: ($r | map(.[1] + .[2]) | add // 0 | . * 10 | round / 10),
			 receiver_rss_max_kib: ($rss[-1] // 0),
			 receiver_rss_median_kib: ($rss[((($rss | length) + 1) / 2 | floor) - 1] // 0)}' >"$work/room-$v.json"
	}
	# room_add VARIANT JQ-ARGS... FILTER: $work/room-VARIANT.json + FILTER's object
	room_add() {
		local f=$work/room-$1.json
		shift
		jq "$@" "$f" >"$f.new" && mv "$f.new" "$f"
	}

	v=pipe
	wait_quiet "room, pipeline"
	OTHER=$QUIET_U
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
	room_end $v "$t0" "$tx0" "$b0" "$s0" "$d"
	w=$(cat "$d"/*.written 2>/dev/null | sort -n | tail -n1)
	ok=0
	for i in $(seq "$RECEIVERS"); do
		[ "$(cat "$d/$i.sum" 2>/dev/null)" = "$room_sum" ] && ok=$((ok + 1))
	done
	srvcpu=$(jq -Rn '[inputs | select(test("^[0-9.]+ ")) | split(" ") | map(tonumber) | .[1] + .[2]] | .[0]' "$d/sender.time" 2>/dev/null || echo null)
	room_add $v --argjson w "$(calc "${w:-$(now)} - $t0")" --argjson ok $ok --argjson c "${srvcpu:-null}" \
		'. + {written_seconds: $w, verified: $ok, server_cpu_seconds: $c}'
	info "room: pipeline $(jq .seconds "$work/room-$v.json") s (written $(jq .written_seconds "$work/room-$v.json") s), $ok/$RECEIVERS verified"
	rm -rf "$work/disks" && mkdir -p "$work/disks"

	serve "[[mtftp.start]]
files = \"images/*\"
min_receivers = $RECEIVERS
max_wait = \"120s\""
	for v in tftp http; do
		extra=()
		[ $v = http ] && extra=(--http "http://$SRV")
		wait_quiet "room, mtftpd ($v index)"
		OTHER=$QUIET_U
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
		room_end $v "$t0" "$tx0" "$b0" "$s0" "$d"
		ok=0
		: >"$work/written.jsonl"
		for i in $(seq "$RECEIVERS"); do
			f=$d/$i
			if [ -s "$f.verified" ] && [ "$(jq -r .via "$f.json" 2>/dev/null)" = multicast ]; then
				ok=$((ok + 1))
				# when this disk was written: its end less its verify phase
				jq --argjson e "$(cat "$f.verified")" '$e - (.phases.verify // 0)' "$f.json" >>"$work/written.jsonl"
			else
				warn "c$i ($v index) failed: $(tail -n 2 "$f.err" 2>/dev/null | tr '\n' ' ')"
			fi
		done
		identical=0
		for i in 1 $(((RECEIVERS + 1) / 2)) "$RECEIVERS"; do
			cmp -n "$RAW" "$work/room.raw" "$work/disks/d$i" >/dev/null 2>&1 && identical=$((identical + 1))
		done
		# the server's session log lines of this run, and the receivers' --json
		jq -c 'select(.message == "mtftp: native session") | {data_shards, repair_shards, passes, naks, repair_rounds,
			rate_MBps, duration_ms: .duration, wire_bytes, receivers, completed}' "$work/server.log" 2>/dev/null |
			tail -n +$((sessions0 + 1)) >"$work/sessions.jsonl"
		cat "$d"/*.json 2>/dev/null >"$work/deploys.jsonl" || true
		room_add $v --slurpfile written "$work/written.jsonl" --slurpfile sess "$work/sessions.jsonl" \
			--slurpfile dep "$work/deploys.jsonl" --argjson t0 "$t0" --argjson ok $ok --argjson c "$(calc "$c1 - $c0" 1)" \
			--argjson cmp $identical '
			def r2: . * 100 | round / 100;
			def total(f): $dep | map(.multicast // {} | f // 0) | add // 0;
			. + {verified: $ok, server_cpu_seconds: $c, cmp_identical: $cmp, sessions: $sess,
			 written_seconds: ($written | max // $t0 | . - $t0 | r2),
			 index_max_seconds: ($dep | map(.phases.index // 0) | max // 0 | r2),
			 verify_max_seconds: ($dep | map(.phases.verify // 0) | max // 0 | r2),
			 naks: total(.naks), rejoins: total(.rejoins), moves: total(.moves), rebuilt: total(.rebuilt)}'
		info "room: mtftpd ($v index) $(jq .seconds "$work/room-$v.json") s, $ok/$RECEIVERS verified, wire $(calc "$(jq .wire_bytes "$work/room-$v.json") / $img_size" 3)×"
		rm -rf "$work/disks" && mkdir -p "$work/disks"
	done
	jq -n --slurpfile p "$work/room-pipe.json" --slurpfile t "$work/room-tftp.json" --slurpfile h "$work/room-http.json" \
		'{pipeline: $p[0], mtftpd_tftp: $t[0], mtftpd_http: $h[0]}' >"$work/room.json"
fi
stop_pid "$srvpid"
srvpid=

# ----------------------------------------------------------------- report
# The run as JSON (bench.ImageRun, docs/bench-json.md), kept in bench-out/;
# `mtftpd bench report image` renders it. The hand-written paragraphs of
# the previous report (between <!-- notes NAME --> and <!-- /notes NAME -->)
# are carried over.
notes_of() { # NAME
	[ -f "$OUT" ] || return 0
	sed -n "/^<!-- notes $1 -->\$/,/^<!-- \/notes $1 -->\$/p" "$OUT" | sed '1d;$d'
}
json_of() { if [ -s "$1" ]; then cat "$1"; else echo null; fi; } # FILE, or null when the part did not run
mkdir -p bench-out
run=bench-out/image-$(date -u +%Y%m%d-%H%M%S).json
jq -n --arg date "$(date -u +%FT%TZ)" --argjson host "$(host_json)" --argjson mem "$(meminfo MemTotal)" --arg ver "$ver" \
	--arg l0 "$load_start" --arg l1 "$(load)" --argjson busy "$BUSY_MAX" --argjson qw "$QUIET_WAIT" \
	--argjson n "$RECEIVERS" --argjson raw "$RAW_GB" --argjson data "$DATA_MB" --argjson room_data "$ROOM_DATA_MB" \
	--argjson small "$SMALL_GB" --argjson large "$LARGE_GB" --argjson repeat "$REPEAT" --arg srv "$SRV" \
	--slurpfile issue "$work/issue.fig" --slurpfile smallf "$work/small.fig" --slurpfile roomf "$work/room.fig" \
	--argjson largef "$(json_of "$work/large.fig")" --argjson zst "$zst_size" \
	--argjson create "$(if [ -s "$work/create.jsonl" ]; then jq -s . "$work/create.jsonl"; else echo null; fi)" \
	--argjson one "$(json_of "$work/one.json")" --argjson rss "$(json_of "$work/rss.json")" --argjson room "$(json_of "$work/room.json")" \
	--arg nroom "$(notes_of room)" --arg nrss "$(notes_of rss)" \
	'{date: $date, host: $host, mem_total_kib: $mem, version: $ver, load_start: $l0, load_end: $l1, busy_max: $busy,
	  quiet_wait_seconds: $qw, receivers: $n, raw_gb: $raw, data_mb: $data, room_data_mb: $room_data, small_gb: $small,
	  large_gb: $large, repeat: $repeat, server: $srv,
	  images: {issue: $issue[0], small: $smallf[0], room: $roomf[0], large: $largef}, room_zst_size: $zst,
	  create: $create, one: $one, rss: $rss, room: $room, quiet_log: $ARGS.positional, notes: {room: $nroom, rss: $nrss}}' \
	--args "${QUIET_LOG[@]}" >"$run"
mkdir -p "$(dirname "$OUT")"
"$bin" bench report image --in "$run" -o "$OUT" || die "bench report image failed (the run is in $run)"
info "done: $OUT (the run: $run)"
