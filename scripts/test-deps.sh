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
# (e2e/secureboot_test.go): shim-signed, grub-efi-amd64-signed; the ARM64
# UEFI machine (e2e/arm64_test.go): qemu-system-arm and its firmware
# qemu-efi-aarch64 (AAVMF), and from Debian's arm64 packages (downloaded
# and unpacked, not installed: see the end) the signed shimaa64.efi and
# grubnetaa64.efi, a kernel and a static busybox.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in curl atftp tftp-hpa busybox iproute2 nftables iptables util-linux \
  udhcpc isc-dhcp-client dnsmasq-base libwrap0 \
  qemu-system-x86 seabios ipxe-qemu ovmf pxelinux syslinux-common ipxe linux-image-amd64 cpio \
  chromium qemu-utils util-linux mount fdisk e2fsprogs \
  extlinux dosfstools mtools grub-efi-amd64-bin shim-signed grub-efi-amd64-signed \
  qemu-system-arm qemu-efi-aarch64 systemd; do
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
# The ARM64 UEFI boot (e2e/arm64_test.go) needs arm64 binaries: Debian's
# signed shim and network grub, a kernel and a static busybox for the test
# initrd.
# They cannot be installed on amd64, so they are downloaded as arm64 .debs
# and only the files the test uses are unpacked into $a64 (the path is
# arm64Cache in the test). Skipped when all four are there already.
a64=/var/cache/mtftpd-test/arm64
if [ "$(id -u)" = 0 ] && ! { [ -f "$a64/shimaa64.efi" ] && [ -f "$a64/grubnetaa64.efi" ] && [ -f "$a64/vmlinuz" ] && [ -x "$a64/busybox" ]; }; then
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq
  fi
  # linux-image-arm64 is a metapackage: the kernel is the package it
  # depends on (linux-image-<abi>-arm64).
  kpkg=$(apt-cache depends linux-image-arm64:arm64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1)
  kpkg=${kpkg%:arm64}
  mkdir -p "$a64.deb" && rm -f "$a64.deb"/*.deb
  if [ -n "$kpkg" ] && (cd "$a64.deb" && apt-get download -q shim-signed:arm64 grub-efi-arm64-signed:arm64 "$kpkg:arm64" busybox-static:arm64 >/dev/null 2>&1); then
    rm -rf "$a64" "$a64.x" && mkdir -p "$a64" "$a64.x"
    for d in "$a64.deb"/shim-signed_*.deb "$a64.deb"/grub-efi-arm64-signed_*.deb "$a64.deb"/busybox-static_*.deb; do dpkg-deb -x "$d" "$a64.x"; done
    # the kernel package is mostly modules: take only the kernel image
    dpkg-deb --fsys-tarfile "$a64.deb"/linux-image-*.deb | tar -x -C "$a64.x" --wildcards './boot/vmlinuz-*'
    cp "$a64.x"/usr/lib/shim/shimaa64.efi.signed "$a64/shimaa64.efi"
    cp "$a64.x"/usr/lib/grub/arm64-efi-signed/grubnetaa64.efi.signed "$a64/grubnetaa64.efi"
    cp "$a64.x"/boot/vmlinuz-* "$a64/vmlinuz"
    cp "$a64.x"/bin/busybox "$a64/busybox"
    rm -rf "$a64.x" "$a64.deb"
  else
    echo "test-deps: could not download the arm64 packages; the ARM64 UEFI test will fail" >&2
  fi
fi
echo "test-deps: ok"
