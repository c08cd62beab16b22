#!/usr/bin/env bash
# Installs what bench/passthrough compares the wrapper with: HAProxy and nginx
# from Debian (bookworm: haproxy 2.6, nginx 1.22). Idempotent; run as root.
#
# The bench launches its own haproxy and nginx instances with configuration
# files in its temporary directory, so the system services are neither
# started by the install nor left running: a system nginx would hold port 80
# and a system haproxy would only add noise to the measurement.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "bench/setup.sh: run as root (apt-get install)" >&2
  exit 1
fi

packages=(haproxy nginx)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
  # policy-rc.d exit 101 tells invoke-rc.d not to start services during the
  # install. Only create it when there is none, and remove only our own.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
  fi
  trap 'if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi' EXIT
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Installed earlier by someone else, perhaps with the services started:
# stop them and keep them from starting at boot. Failures here only mean
# there is no such service manager or no such service running.
for s in haproxy nginx; do
  if [ -d /run/systemd/system ]; then
    systemctl disable --now "$s" >/dev/null 2>&1 || true
  else
    service "$s" stop >/dev/null 2>&1 || true
    update-rc.d "$s" disable >/dev/null 2>&1 || true
  fi
done

haproxy -v | sed -n 1p # sed reads everything: no SIGPIPE under pipefail
nginx -v
