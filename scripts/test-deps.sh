#!/usr/bin/env bash
# Installs what the tests need on Debian (idempotent: installs only what is
# missing). Real TFTP clients for interop: curl, atftp, tftp-hpa, busybox;
# the namespace lab: iproute2, nftables; real DHCP clients and a peer DHCP
# server: udhcpc, isc-dhcp-client, dnsmasq-base; real firmware and a
# kernel to boot: qemu (software emulation), SeaBIOS, iPXE ROMs, OVMF,
# pxelinux, a Debian kernel and cpio for the test initrd; headless
# chromium for the status page.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in curl atftp tftp-hpa busybox iproute2 nftables iptables \
  udhcpc isc-dhcp-client dnsmasq-base \
  qemu-system-x86 seabios ipxe-qemu ovmf pxelinux syslinux-common ipxe linux-image-amd64 cpio \
  chromium; do
  have "$p" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "test-deps: missing ${need[*]} and not root; tests needing them will skip" >&2
    exit 0
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "test-deps: ok"
