#!/usr/bin/env bash
# Debian packages the test suite drives for real: Chromium (browser caller),
# coturn (TURN relay), iproute2 (network namespaces), openssl (certificate
# and TURN credential cross-checks), nginx (a TLS reverse proxy in front of
# the server; the tests run their own instance, never the system service),
# redis-server (the cluster registry; the tests start their own, without
# persistence) and nftables (a 1:1 NAT inside a test's network namespace).
# Installed only when
# missing; without root we say what is missing and let the tests report it.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v turnserver >/dev/null 2>&1 || need+=(coturn)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v nginx >/dev/null 2>&1 || need+=(nginx)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v nft >/dev/null 2>&1 || need+=(nftables)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "system-deps: missing ${need[*]} (run as root or install them)" >&2
  exit 0
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
