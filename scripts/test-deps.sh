#!/usr/bin/env bash
# Installs what the tests need on Debian (idempotent: installs only what is
# missing). Real TFTP clients for interop: curl, atftp, tftp-hpa, busybox;
# the namespace lab: iproute2, nftables; setpriv (util-linux) to start
# mtftpd with a capability as systemd does; real DHCP clients and a peer DHCP
# server: udhcpc, isc-dhcp-client, dnsmasq-base; real firmware and a
# kernel to boot: qemu (software emulation), SeaBIOS, iPXE ROMs, OVMF,
# pxelinux, a Debian kernel and cpio for the test initrd; qemu-img,
# qemu-io and qemu-nbd for the disk image tests (qemu-utils); loop
# devices, partition tables and ext4 for the image deploy tests
# (util-linux, mount, fdisk, e2fsprogs); headless chromium for the status
# page; the bootable golden disk of the reimage tests (e2e/golden_test.go):
# extlinux (BIOS loader; mbr.bin is in syslinux-common), dosfstools and
# mtools (the ESP, filled without mounting), grub-efi-amd64-bin
# (grub-mkstandalone for \EFI\BOOT\BOOTX64.EFI); the Secure Boot chain
# (e2e/secureboot_test.go): shim-signed, grub-efi-amd64-signed.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in curl atftp tftp-hpa busybox iproute2 nftables iptables util-linux \
  udhcpc isc-dhcp-client dnsmasq-base libwrap0 \
  qemu-system-x86 seabios ipxe-qemu ovmf pxelinux syslinux-common ipxe linux-image-amd64 cpio \
  chromium qemu-utils util-linux mount fdisk e2fsprogs \
  extlinux dosfstools mtools grub-efi-amd64-bin shim-signed grub-efi-amd64-signed; do
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
# tftpd-hpa's server for the bench smoke test (bench/tftp_lab_test.go) is
# unpacked, not installed: installing it would start a system TFTP service;
# the test runs in.tftpd itself in a lab namespace (libwrap0 above is its
# library).
hpa=/var/cache/mtftpd-test/tftpd-hpa
if [ ! -x /usr/sbin/in.tftpd ] && [ ! -x "$hpa/usr/sbin/in.tftpd" ] && [ "$(id -u)" = 0 ]; then
  mkdir -p "$hpa.deb" && rm -f "$hpa.deb"/*.deb
  (cd "$hpa.deb" && apt-get download -q tftpd-hpa >/dev/null 2>&1) &&
    rm -rf "$hpa" && dpkg -x "$hpa.deb"/tftpd-hpa_*.deb "$hpa" ||
    echo "test-deps: could not unpack tftpd-hpa; the bench smoke test will skip" >&2
fi
echo "test-deps: ok"
