#!/usr/bin/env bash
# Installs the system binaries the tests and the demo talk to, from Debian's
# packages, when they are missing: redis-server, postfix, dovecot (IMAP) and
# promtool. Needs root for apt-get; without root it says what is missing.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
have redis-server || need+=(redis-server)
have postfix || need+=(postfix)
have dovecot || need+=(dovecot-imapd)
have promtool || need+=(prometheus)
have systemd-analyze || need+=(systemd)
have python3 || need+=(python3)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-deps: missing ${need[*]}; install them (Debian: apt-get install ${need[*]})" >&2
  exit 0
fi
echo "install-deps: installing ${need[*]} with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
# Postfix must not configure itself as this machine's mail system: the tests
# run their own instance from a private directory.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
echo "postfix postfix/mailname string localhost" | debconf-set-selections
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
