#!/usr/bin/env bash
# Installs what the tests need on Debian (idempotent: installs only what is
# missing). Real TFTP clients for interop: curl, atftp, tftp-hpa, busybox.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in curl atftp tftp-hpa busybox iproute2 nftables; do
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
echo "test-deps: ok (curl atftp tftp-hpa busybox iproute2)"
