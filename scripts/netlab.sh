#!/usr/bin/env bash
# netlab.sh — the network-namespace test lab of mtftpd (docs/design.md, "The network-namespace lab").
#
# A switch namespace PREFIX-sw holds bridge br0; a server namespace PREFIX-srv
# and client namespaces PREFIX-c1..PREFIX-cN each get an eth0 that is one end
# of a veth pair whose other end (p-srv, p-c1, ...) is a port of br0. Optional
# tap devices on br0 let QEMU run inside PREFIX-sw. Used by internal/netlab
# (Go tests), the bench and soak scripts, and by hand
# (scripts/netlab.sh up 2, scripts/netlab.sh exec c1 ..., scripts/netlab.sh down).
#
# Safety, by construction:
#   - nothing is created in or attached to the root namespace: veth pairs are
#     created inside PREFIX-sw with their peer placed directly in the endpoint
#     namespace, and every ip/tc/nft command runs with -n / netns exec;
#   - addresses only from TEST-NET-1/2 (RFC 5737), multicast routes only for
#     239.255.0.0/16 (RFC 2365 organisation-local scope);
#   - no sysctl, route, interface or nftables change in the root namespace;
#   - every wait loop is bounded; a failed `up` tears down what it made;
#     `down` is idempotent.
#
# Run with no arguments (or -h) for usage.
set -euo pipefail

PREFIX=mtl
MAX_CLIENTS=200
# Clients 1..154 get 192.0.2.(100+i) (.101-.254); the rest, up to 200, get
# 198.51.100.(i-54) (.101-.146) and the server holds 198.51.100.1 as well.
# Each subnet is on-link in every endpoint, so all of them reach each other.
NET1=192.0.2
NET2=198.51.100
MCAST=239.255.0.0/16
# Bridge IGMP query response interval in centiseconds (kernel default 1000 =
# 10 s): also how long a fresh querier waits before it filters, so `up
# --snooping on` waits this long. 0.5 s is plenty for hosts on one bridge.
QRI_CS=50
# impair PORT delay: nfqdelay (cmd/nfqdelay) reads NFQUEUE DELAY_QUEUE in the
# endpoint namespace; queues are per namespace, so one number serves all.
# Its pidfile and log are RUNDIR/PREFIX-PORT.nfqdelay.{pid,log}.
DELAY_QUEUE=100
DELAY_TAG=netlab-delay
RUNDIR=/run/mtftpd-netlab

usage() {
	cat <<'EOF'
usage: netlab.sh [-p PREFIX] COMMAND [ARGS...]

  -p PREFIX   lab name prefix (default mtl; [A-Za-z0-9_], at most 16 chars);
              namespaces are PREFIX-sw, PREFIX-srv, PREFIX-c1..PREFIX-cN

commands:
  up N [--snooping on|off] [--no-addr] [--ipv6] [--taps K] [--tap NAME]...
        create the lab with N clients (0..200). br0 floods multicast unless
        --snooping on (mcast_snooping 1, mcast_querier 1). Server eth0 is
        192.0.2.1/24 (+ 198.51.100.1/24); client i is 192.0.2.(100+i)/24,
        or 198.51.100.(i-54)/24 for i > 154; --no-addr leaves clients without
        an address (DHCP tests). Every endpoint routes 239.255.0.0/16 via eth0.
        IPv6 link-local autoconfiguration is off (quiet wire, exact counters)
        unless --ipv6. --taps K adds tap1..tapK, --tap NAME adds NAME (owner
        root) to br0 for QEMU run inside PREFIX-sw:
          -netdev tap,id=n0,ifname=tap1,script=no,downscript=no
  down  stop processes left inside the lab namespaces, delete every PREFIX-*
        namespace (exit 0 if there is none)
  exec NS CMD [ARGS...]
        run CMD inside PREFIX-NS (NS: sw, srv, c1, ...)
  impair PORT loss PCT | rate MBIT | delay MS [JITTER_MS] | clear
        PORT: srv, c1, ..., a tap name, or all (every client port).
        loss PCT  drop PCT % (0..100, up to 3 decimals) in both directions:
                  nftables netdev ingress+egress on the bridge port
                  (numgen random mod 100000 < PCT*1000 drop); 0 removes it
        rate MBIT tbf at MBIT Mbit/s in both directions: root qdisc of the
                  bridge port p-PORT (toward the endpoint) and of eth0 in
                  the endpoint (from it); burst 32kbit, latency 50ms
        delay MS [JITTER_MS]
                  hold every UDP datagram MS + uniform[0, JITTER_MS) ms
                  (integers), each on its own, so JITTER_MS > 0 reorders.
                  Both directions, each delayed: a round trip through PORT
                  gains 2 x MS. Endpoints only (srv, cN; not taps): iptables
                  NFQUEUE (--queue-bypass) on OUTPUT -o eth0 and INPUT -i
                  eth0 in PREFIX-PORT, served by cmd/nfqdelay running there
                  (built once into ~/.cache/mtftpd-netlab; NETLAB_NFQDELAY
                  names a prebuilt binary). nfqdelay exits by itself after
                  NETLAB_DELAY_MAX (default 10m); traffic then passes
                  undelayed. Replaces an earlier delay. Needs iptables.
        clear     remove loss, rate and delay
  counters NS
        rx/tx bytes and packets of eth0 in PREFIX-NS, one "name value" a line
  status
        list the lab's namespaces, bridge settings and impairments
EOF
}

die() {
	echo "netlab: $*" >&2
	exit 1
}

misuse() {
	echo "netlab: $*" >&2
	echo "run 'netlab.sh -h' for usage" >&2
	exit 2
}

need_root() {
	[ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN)"
}

need_tool() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 || die "'$t' not found (Debian: iproute2 for ip/tc/bridge, nftables for nft)"
	done
}

# lab_namespaces prints the names of this lab's namespaces, one a line.
lab_namespaces() {
	ip netns list 2>/dev/null | awk -v p="$PREFIX-" 'index($1, p) == 1 { print $1 }'
}

# endpoints prints srv and c1..cN for the lab that is up, in numeric order.
endpoints() {
	lab_namespaces | awk -v p="$PREFIX-" '{ s = substr($1, length(p) + 1); if (s == "srv") print 0, s; else if (s ~ /^c[0-9]+$/) print substr(s, 2), s }' |
		sort -n | awk '{ print $2 }'
}

# client_addr I prints client I's address (see NET1/NET2 above).
client_addr() {
	if [ "$1" -le 154 ]; then
		echo "$NET1.$((100 + $1))"
	else
		echo "$NET2.$(($1 - 54))"
	fi
}

ns_exists() {
	[ -e "/run/netns/$1" ]
}

# check_ns NS: NS is a short name (sw, srv, cI) of a namespace of this lab.
check_ns() {
	[[ $1 =~ ^(sw|srv|c[1-9][0-9]*)$ ]] || misuse "bad namespace '$1' (want sw, srv, c1, ...)"
	ns_exists "$PREFIX-$1" || die "namespace $PREFIX-$1 does not exist (is lab '$PREFIX' up?)"
}

# up_exit is cmd_up's EXIT trap: a failed or interrupted up removes the lab.
up_exit() {
	local rc=$?
	trap - EXIT
	if [ "$rc" -ne 0 ]; then
		echo "netlab: up failed (exit $rc); removing lab $PREFIX" >&2
		(cmd_down) >/dev/null 2>&1 || true
	fi
	exit "$rc"
}

cmd_up() {
	local n="" snoop=0 addr=1 ipv6=0 k i t
	local -a taps=()
	while [ $# -gt 0 ]; do
		case $1 in
		--snooping)
			[ $# -ge 2 ] || misuse "--snooping needs on or off"
			case $2 in on) snoop=1 ;; off) snoop=0 ;; *) misuse "--snooping: want on or off, got '$2'" ;; esac
			shift 2
			;;
		--no-addr) addr=0; shift ;;
		--ipv6) ipv6=1; shift ;;
		--taps)
			if ! { [ $# -ge 2 ] && [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -le 64 ]; }; then
				misuse "--taps needs a count 0..64"
			fi
			for ((k = 1; k <= $2; k++)); do taps+=("tap$k"); done
			shift 2
			;;
		--tap)
			[ $# -ge 2 ] || misuse "--tap needs a name"
			[[ $2 =~ ^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$ ]] || misuse "--tap: bad interface name '$2' (at most 15 chars of [A-Za-z0-9_.-])"
			case $2 in br0 | lo | eth0 | p-*) misuse "--tap: name '$2' is taken by the lab" ;; esac
			taps+=("$2")
			shift 2
			;;
		-*) misuse "up: unknown option '$1'" ;;
		*)
			[ -z "$n" ] || misuse "up: unexpected argument '$1'"
			n=$1
			shift
			;;
		esac
	done
	if ! { [[ $n =~ ^[0-9]+$ ]] && [ "$n" -le "$MAX_CLIENTS" ]; }; then
		misuse "up: want a client count 0..$MAX_CLIENTS, got '${n:-nothing}'"
	fi
	n=$((10#$n))
	if [ ${#taps[@]} -gt 0 ]; then
		[ -c /dev/net/tun ] || die "--taps/--tap: /dev/net/tun is missing"
		if [ "$(printf '%s\n' "${taps[@]}" | sort | uniq -d | head -n1)" != "" ]; then
			misuse "up: a tap name is given twice"
		fi
	fi
	need_tool ip bridge

	local existing
	existing=$(lab_namespaces | wc -l)
	[ "$existing" -eq 0 ] || die "lab '$PREFIX' is already up ($existing namespaces); run: netlab.sh -p $PREFIX down"

	# From here on a failure (or a signal) removes whatever was created.
	trap up_exit EXIT
	trap 'exit 130' INT TERM HUP

	local sw="$PREFIX-sw"
	local -a eps=(srv)
	for ((i = 1; i <= n; i++)); do eps+=("c$i"); done

	# 1. Namespaces, in one ip process (ip restores its own namespace after
	#    each "netns add", so the batch itself stays where it started).
	{
		echo "netns add $sw"
		for t in "${eps[@]}"; do echo "netns add $PREFIX-$t"; done
	} | ip -batch -

	# 2. Switch: bridge, veth pairs (peer born in the endpoint namespace),
	#    taps. One ip process, all of it inside $sw.
	local gen=""
	[ "$ipv6" -eq 1 ] || gen=none
	{
		echo "link set lo up"
		if [ "$snoop" -eq 1 ]; then
			# The querier must be switched on after the response interval
			# is set: enabling it starts a delay of that interval (10 s by
			# default) during which the bridge still floods every group.
			echo "link add br0 type bridge stp_state 0 mcast_snooping 1 mcast_query_response_interval $QRI_CS"
		else
			echo "link add br0 type bridge stp_state 0 mcast_snooping 0"
		fi
		[ -z "$gen" ] || echo "link set br0 addrgenmode $gen"
		echo "link set br0 up"
		[ "$snoop" -eq 0 ] || echo "link set br0 type bridge mcast_querier 1"
		for t in "${eps[@]}"; do
			echo "link add p-$t type veth peer name eth0 netns $PREFIX-$t"
			[ -z "$gen" ] || echo "link set p-$t addrgenmode $gen"
			echo "link set p-$t master br0 up"
		done
		for t in "${taps[@]}"; do
			echo "tuntap add dev $t mode tap user 0 group 0"
			[ -z "$gen" ] || echo "link set $t addrgenmode $gen"
			echo "link set $t master br0 up"
		done
	} | ip -n "$sw" -batch -

	# 2b. A switch forwards frames without the host's firewall. Bridge
	#     netfilter (on wherever br_netfilter is loaded) would pass every
	#     bridged IPv4, IPv6 and ARP frame through this namespace's
	#     iptables hooks, which hold no rule (the impairments are
	#     netdev-family nftables on the ports and NFQUEUE in the
	#     endpoints), at a sixth of a sender's CPU per datagram
	#     (docs/design.md, "The network-namespace lab"). These sysctls are
	#     per namespace (bridge_nf_off).
	bridge_nf_off "$sw"

	# 3. Endpoints: one ip process each.
	for t in "${eps[@]}"; do
		{
			echo "link set lo up"
			[ -z "$gen" ] || echo "link set eth0 addrgenmode $gen"
			if [ "$t" = srv ]; then
				echo "addr add $NET1.1/24 dev eth0"
				echo "addr add $NET2.1/24 dev eth0"
			elif [ "$addr" -eq 1 ]; then
				i=${t#c}
				echo "addr add $(client_addr "$i")/24 dev eth0"
			fi
			echo "link set eth0 up"
			# Both TEST-NETs on-link everywhere: clients past 154 reach the
			# server's primary address, and rp_filter (inherited from the
			# root namespace) accepts multicast sourced from 192.0.2.1.
			if [ "$t" = srv ] || [ "$addr" -eq 0 ]; then
				:
			elif [ "${t#c}" -le 154 ]; then
				echo "route add $NET2.0/24 dev eth0 scope link"
			else
				echo "route add $NET1.0/24 dev eth0 scope link"
			fi
			echo "route add $MCAST dev eth0"
		} | ip -n "$PREFIX-$t" -batch -
	done

	# 4. Wait (bounded: 50 x 0.1 s) until every veth port forwards. With STP
	#    off the kernel moves ports straight to forwarding; this catches
	#    anything slower rather than letting a test race it.
	local want=$((n + 1)) got=0 try
	for ((try = 0; try < 50; try++)); do
		got=$(bridge -n "$sw" link show | grep -c ' p-[a-z0-9]*@.*state forwarding' || true)
		[ "$got" -ge "$want" ] && break
		sleep 0.1
	done
	[ "$got" -ge "$want" ] || die "only $got of $want bridge ports forwarding after 5 s"
	# 5. Snooping: sit out the querier's start-up delay (see step 2) so
	#    that the switch filters from the first datagram of a test.
	if [ "$snoop" -eq 1 ]; then
		sleep "$(awk -v cs="$QRI_CS" 'BEGIN { print cs / 100 + 0.2 }')"
	fi

	trap - EXIT INT TERM HUP
	echo "netlab: lab $PREFIX up: $n clients, snooping $([ "$snoop" -eq 1 ] && echo on || echo off)${taps[*]:+, taps ${taps[*]}}"
}

# lab_pids prints the ids of processes whose network namespace is one of this
# lab's (ip netns pids, done in one pass over /proc for every namespace).
lab_pids() {
	local -A inode=()
	local ns link path pid
	for ns in "$@"; do
		inode["net:[$(stat -L -c %i "/run/netns/$ns")]"]=1
	done
	# One find process instead of a readlink per pid; %l is the link target.
	while read -r link path; do
		[ -n "${inode[$link]:-}" ] || continue
		pid=${path#/proc/}
		pid=${pid%/ns/net}
		[ "$pid" = "$$" ] || echo "$pid"
	done < <(find /proc/[0-9]*/ns/net -maxdepth 0 -printf '%l %p\n' 2>/dev/null || true)
}

cmd_down() {
	[ $# -eq 0 ] || misuse "down takes no arguments"
	local -a nss pids
	mapfile -t nss < <(lab_namespaces)
	if [ ${#nss[@]} -eq 0 ]; then
		echo "netlab: lab $PREFIX is not up"
		return 0
	fi
	# A process left in a lab namespace (a server, qemu in PREFIX-sw) would
	# keep that namespace and its devices alive after the name is gone.
	mapfile -t pids < <(lab_pids "${nss[@]}")
	if [ ${#pids[@]} -gt 0 ]; then
		echo "netlab: stopping ${#pids[@]} process(es) left in lab $PREFIX: ${pids[*]}" >&2
		kill -TERM "${pids[@]}" 2>/dev/null || true
		local try
		for ((try = 0; try < 20; try++)); do # bounded: 2 s
			mapfile -t pids < <(lab_pids "${nss[@]}")
			[ ${#pids[@]} -eq 0 ] && break
			sleep 0.1
		done
		[ ${#pids[@]} -eq 0 ] || kill -KILL "${pids[@]}" 2>/dev/null || true
	fi
	printf 'netns del %s\n' "${nss[@]}" | ip -force -batch - || true
	rm -f "$RUNDIR/$PREFIX-"*.nfqdelay.pid "$RUNDIR/$PREFIX-"*.nfqdelay.log
	local left
	left=$(lab_namespaces | wc -l)
	[ "$left" -eq 0 ] || die "down: $left namespaces of lab $PREFIX remain"
	echo "netlab: lab $PREFIX down (${#nss[@]} namespaces removed)"
}

cmd_exec() {
	[ $# -ge 2 ] || misuse "exec needs NS and a command"
	check_ns "$1"
	local ns="$PREFIX-$1"
	shift
	exec ip netns exec "$ns" "$@"
}

# bridge_nf_off NS turns bridge netfilter off in namespace NS (cmd_up,
# step 2b), never in the root namespace: the sysctls are per namespace
# since Linux 5.3 (before, br_netfilter has them in the root namespace
# alone), so on an older kernel nothing is written.
bridge_nf_off() {
	local ns=$1 rel major minor k
	rel=$(uname -r)
	major=${rel%%.*} minor=${rel#*.}
	minor=${minor%%.*}
	[[ $major =~ ^[0-9]+$ && $minor =~ ^[0-9]+$ ]] || return 0
	((major > 5 || (major == 5 && minor >= 3))) || return 0
	for k in iptables ip6tables arptables; do
		ip netns exec "$ns" sh -c "f=/proc/sys/net/bridge/bridge-nf-call-$k; [ ! -e \$f ] || echo 0 >\$f" 2>/dev/null || true
	done
}

# port_dev PORT prints the bridge-side device of PORT.
port_dev() {
	case $1 in
	srv | c[1-9]*) echo "p-$1" ;;
	*) echo "$1" ;;
	esac
}

# table_name PORT: nft identifiers allow [A-Za-z0-9_] (no '-' or '.').
table_name() {
	echo "netlab_${1//[^A-Za-z0-9_]/_}"
}

# nfqdelay_bin prints the path of the nfqdelay binary, building it into the
# cache when it is missing or older than its sources.
nfqdelay_bin() {
	if [ -n "${NETLAB_NFQDELAY:-}" ]; then
		[ -x "$NETLAB_NFQDELAY" ] || die "NETLAB_NFQDELAY=$NETLAB_NFQDELAY is not executable"
		echo "$NETLAB_NFQDELAY"
		return 0
	fi
	local root cache bin
	root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
	if ! { [ -f "$root/go.mod" ] && [ -d "$root/cmd/nfqdelay" ]; }; then
		die "no module with cmd/nfqdelay at $root (set NETLAB_NFQDELAY)"
	fi
	# A root-owned cache: never run, as root, a binary from a user's
	# writable cache (sudo -E keeps HOME/XDG_CACHE_HOME).
	cache=/var/cache/mtftpd-netlab
	mkdir -p "$cache" && chmod 0755 "$cache"
	[ "$(stat -c %u "$cache")" = 0 ] || die "$cache is not owned by root"
	bin=$cache/nfqdelay
	if [ ! -x "$bin" ] || [ -n "$(find "$root/cmd/nfqdelay" "$root/go.mod" "$root/go.sum" -newer "$bin" -print -quit 2>/dev/null)" ]; then
		command -v go >/dev/null 2>&1 || die "'go' not found: needed once to build cmd/nfqdelay (or set NETLAB_NFQDELAY)"
		mkdir -p "$cache"
		# Build beside the target and rename: concurrent labs never run a
		# half-written binary.
		(cd "$root" && go build -o "$bin.tmp.$$" ./cmd/nfqdelay) >&2 || {
			rm -f "$bin.tmp.$$"
			die "building cmd/nfqdelay failed"
		}
		mv -f "$bin.tmp.$$" "$bin"
	fi
	echo "$bin"
}

# delay_rules ADD|DEL PORT adds or removes the NFQUEUE rules in PREFIX-PORT.
delay_rules() {
	local op=$1 ns="$PREFIX-$2" try
	local -a out=(OUTPUT -o eth0 -p udp -m comment --comment "$DELAY_TAG" -j NFQUEUE --queue-num "$DELAY_QUEUE" --queue-bypass)
	local -a in=(INPUT -i eth0 -p udp -m comment --comment "$DELAY_TAG" -j NFQUEUE --queue-num "$DELAY_QUEUE" --queue-bypass)
	if [ "$op" = DEL ]; then
		# Listing creates nothing; skip namespaces that never had a delay.
		ip netns exec "$ns" iptables -w 5 -S 2>/dev/null | grep -q -- "$DELAY_TAG" || return 0
		for ((try = 0; try < 16; try++)); do # bounded: duplicates from a crash
			ip netns exec "$ns" iptables -w 5 -D "${out[@]}" 2>/dev/null || break
		done
		for ((try = 0; try < 16; try++)); do
			ip netns exec "$ns" iptables -w 5 -D "${in[@]}" 2>/dev/null || break
		done
		return 0
	fi
	ip netns exec "$ns" iptables -w 5 -A "${out[@]}"
	ip netns exec "$ns" iptables -w 5 -A "${in[@]}"
}

# delay_stop PORT stops the nfqdelay of PREFIX-PORT (it releases what it
# holds and unbinds) and shows its counters; no-op if none runs.
delay_stop() {
	local ns="$PREFIX-$1" pidf="$RUNDIR/$PREFIX-$1.nfqdelay.pid" log="$RUNDIR/$PREFIX-$1.nfqdelay.log"
	local pid try
	pid=$(cat "$pidf" 2>/dev/null || true)
	# Only our process: the name and the namespace must both match.
	if [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = nfqdelay ] &&
		[ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "net:[$(stat -L -c %i "/run/netns/$ns")]" ]; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((try = 0; try < 30; try++)); do # bounded: 3 s; a zombie counts as gone
			[ -e "/proc/$pid/ns/net" ] || break
			sleep 0.1
		done
		[ ! -e "/proc/$pid/ns/net" ] || kill -KILL "$pid" 2>/dev/null || true
		[ ! -s "$log" ] || tail -n 1 "$log" | sed "s/^/netlab: $1: /" >&2
	fi
	rm -f "$pidf" "$log"
}

# delay_start PORT MS JITTER_MS starts nfqdelay in PREFIX-PORT, waits until
# it has bound the queue, then adds the rules.
delay_start() {
	local p=$1 ms=$2 jit=$3 bin
	local ns="$PREFIX-$p"
	local pidf="$RUNDIR/$PREFIX-$p.nfqdelay.pid" log="$RUNDIR/$PREFIX-$p.nfqdelay.log"
	bin=$(nfqdelay_bin)
	mkdir -p "$RUNDIR"
	delay_stop "$p"
	delay_rules DEL "$p"
	# Its own output goes to the log: an inherited stdout or stderr would
	# keep whoever reads this script's output waiting.
	ip netns exec "$ns" "$bin" -queue "$DELAY_QUEUE" -delay "${ms}ms" -jitter "${jit}ms" \
		-duration "${NETLAB_DELAY_MAX:-10m}" -pidfile "$pidf" </dev/null >"$log" 2>&1 &
	local bg=$! try
	for ((try = 0; try < 100; try++)); do # bounded: 10 s (a first build is done by now)
		[ -s "$pidf" ] && break
		kill -0 "$bg" 2>/dev/null || break
		sleep 0.1
	done
	if [ ! -s "$pidf" ]; then
		kill -TERM "$bg" 2>/dev/null || true
		die "delay $p: nfqdelay did not start: $(tr '\n' ' ' <"$log" 2>/dev/null)"
	fi
	delay_rules ADD "$p"
}

cmd_impair() {
	[ $# -ge 2 ] || misuse "impair needs PORT and loss PCT | rate MBIT | delay MS [JITTER_MS] | clear"
	local port=$1 what=$2 val=${3:-} p
	local sw="$PREFIX-sw"
	ns_exists "$sw" || die "lab '$PREFIX' is not up"
	local -a ports=()
	if [ "$port" = all ]; then
		mapfile -t ports < <(endpoints | grep -v '^srv$' || true)
		[ ${#ports[@]} -gt 0 ] || die "impair all: lab '$PREFIX' has no clients"
	else
		[[ $port =~ ^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,14}$ ]] || misuse "bad port '$port'"
		ip -n "$sw" link show dev "$(port_dev "$port")" >/dev/null 2>&1 ||
			die "no bridge port for '$port' in $sw"
		ports=("$port")
	fi
	case $what in
	loss)
		[ $# -eq 3 ] || misuse "impair PORT loss PCT"
		[[ $val =~ ^[0-9]{1,3}(\.[0-9]{1,3})?$ ]] || misuse "loss: want a percentage like 20 or 0.5, got '$val'"
		local n
		n=$(awk -v p="$val" 'BEGIN { printf "%d", p * 1000 + 0.5 }')
		[ "$n" -le 100000 ] || misuse "loss: $val % is more than 100 %"
		need_tool nft
		{
			for p in "${ports[@]}"; do
				local tb dev
				tb=$(table_name "$p")
				dev=$(port_dev "$p")
				# add+delete makes the delete succeed whether or not the
				# table exists; the whole file is one transaction.
				echo "add table netdev $tb"
				echo "delete table netdev $tb"
				[ "$n" -gt 0 ] || continue
				echo "table netdev $tb {"
				echo "  chain in { type filter hook ingress device \"$dev\" priority 0; policy accept; numgen random mod 100000 < $n drop; }"
				echo "  chain out { type filter hook egress device \"$dev\" priority 0; policy accept; numgen random mod 100000 < $n drop; }"
				echo "}"
			done
		} | ip netns exec "$sw" nft -f -
		;;
	rate)
		[ $# -eq 3 ] || misuse "impair PORT rate MBIT"
		if ! { [[ $val =~ ^[0-9]+(\.[0-9]+)?$ ]] && awk -v r="$val" 'BEGIN { exit !(r > 0) }'; }; then
			misuse "rate: want Mbit/s > 0, got '$val'"
		fi
		need_tool tc
		local -a tbf=(tbf rate "${val}mbit" burst 32kbit latency 50ms)
		for p in "${ports[@]}"; do echo "qdisc replace dev $(port_dev "$p") root ${tbf[*]}"; done |
			tc -n "$sw" -batch -
		for p in "${ports[@]}"; do
			if ns_exists "$PREFIX-$p"; then
				tc -n "$PREFIX-$p" qdisc replace dev eth0 root "${tbf[@]}"
			fi
		done
		;;
	clear)
		[ $# -eq 2 ] || misuse "impair PORT clear"
		if command -v nft >/dev/null 2>&1; then
			for p in "${ports[@]}"; do
				echo "add table netdev $(table_name "$p")"
				echo "delete table netdev $(table_name "$p")"
			done | ip netns exec "$sw" nft -f -
		fi
		for p in "${ports[@]}"; do
			# "no qdisc to delete" is the normal case when no rate was set.
			tc -n "$sw" qdisc del dev "$(port_dev "$p")" root 2>/dev/null || true
			if ns_exists "$PREFIX-$p"; then
				tc -n "$PREFIX-$p" qdisc del dev eth0 root 2>/dev/null || true
			fi
		done
		for p in "${ports[@]}"; do
			if ! { [[ $p =~ ^(srv|c[1-9][0-9]*)$ ]] && ns_exists "$PREFIX-$p"; }; then
				continue
			fi
			# Rules first, so nothing new is queued; then nfqdelay
			# releases what it holds.
			if command -v iptables >/dev/null 2>&1; then
				delay_rules DEL "$p"
			fi
			delay_stop "$p"
		done
		;;
	delay)
		{ [ $# -eq 3 ] || [ $# -eq 4 ]; } || misuse "impair PORT delay MS [JITTER_MS]"
		local jit=${4:-0}
		if ! { [[ $val =~ ^[0-9]{1,5}$ ]] && [ "$((10#$val))" -le 60000 ]; }; then
			misuse "delay: want MS 0..60000, got '$val'"
		fi
		if ! { [[ $jit =~ ^[0-9]{1,5}$ ]] && [ "$((10#$jit))" -le 60000 ]; }; then
			misuse "delay: want JITTER_MS 0..60000, got '$jit'"
		fi
		command -v iptables >/dev/null 2>&1 || die "'iptables' not found (Debian: iptables)"
		for p in "${ports[@]}"; do
			if ! { [[ $p =~ ^(srv|c[1-9][0-9]*)$ ]] && ns_exists "$PREFIX-$p"; }; then
				die "delay: '$p' is not an endpoint namespace (srv, c1, ...)"
			fi
		done
		for p in "${ports[@]}"; do delay_start "$p" "$((10#$val))" "$((10#$jit))"; done
		;;
	*) misuse "impair: want loss, rate, delay or clear, got '$what'" ;;
	esac
}

cmd_counters() {
	[ $# -eq 1 ] || misuse "counters needs one namespace (srv, c1, ...)"
	check_ns "$1"
	# ip netns exec mounts the namespace's own /sys.
	# shellcheck disable=SC2016 # expanded by the inner sh
	ip netns exec "$PREFIX-$1" sh -c '
		d=/sys/class/net/eth0/statistics
		[ -d "$d" ] || { echo "netlab: no eth0 in this namespace" >&2; exit 1; }
		for f in rx_bytes tx_bytes rx_packets tx_packets; do
			echo "$f $(cat "$d/$f")"
		done'
}

cmd_status() {
	[ $# -eq 0 ] || misuse "status takes no arguments"
	local -a nss
	mapfile -t nss < <(lab_namespaces)
	if [ ${#nss[@]} -eq 0 ]; then
		echo "lab $PREFIX: not up"
		return 0
	fi
	local n
	n=$(endpoints | grep -c '^c' || true)
	echo "lab $PREFIX: ${#nss[@]} namespaces ($n clients)"
	local sw="$PREFIX-sw"
	if ns_exists "$sw"; then
		local snoop
		snoop=$(ip -n "$sw" -d link show dev br0 2>/dev/null | grep -o 'mcast_snooping [01]' || echo 'mcast_snooping ?')
		echo "br0: $snoop"
		ip -n "$sw" -o link show master br0 2>/dev/null | awk '{ sub(/@.*/, "", $2); sub(/:$/, "", $2); printf "%s ", $2 } END { print "" }' | sed 's/^/ports: /'
		if command -v nft >/dev/null 2>&1; then
			ip netns exec "$sw" nft -a list tables 2>/dev/null | awk '$3 ~ /^netlab_/ { print "loss:", $3 }' || true
		fi
		ip -n "$sw" -o link show 2>/dev/null | awk '/ qdisc tbf / { sub(/@.*/, "", $2); sub(/:$/, "", $2); print "rate:", $2 }' || true
	fi
	printf '%s\n' "${nss[@]}" | sort -V | tr '\n' ' '
	echo
}

main() {
	while [ $# -gt 0 ]; do
		case $1 in
		-p)
			[ $# -ge 2 ] || misuse "-p needs a prefix"
			PREFIX=$2
			shift 2
			;;
		-h | --help | help)
			usage
			exit 0
			;;
		-*) misuse "unknown option '$1'" ;;
		*) break ;;
		esac
	done
	[ $# -gt 0 ] || {
		usage >&2
		exit 2
	}
	# No '-' in the prefix: "down" deletes PREFIX-*, which must not reach
	# into a lab whose prefix merely starts with this one.
	[[ $PREFIX =~ ^[A-Za-z0-9][A-Za-z0-9_]{0,15}$ ]] || misuse "bad prefix '$PREFIX' (want [A-Za-z0-9_], at most 16 chars)"
	local cmd=$1
	shift
	case $cmd in
	up | down | exec | impair | counters | status) ;;
	*) misuse "unknown command '$cmd'" ;;
	esac
	need_root
	need_tool ip
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	exec) cmd_exec "$@" ;;
	impair) cmd_impair "$@" ;;
	counters) cmd_counters "$@" ;;
	status) cmd_status "$@" ;;
	esac
}

main "$@"
