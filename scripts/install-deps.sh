#!/usr/bin/env bash
# Install the system packages the tests and benchmarks need (Debian 12).
# Idempotent: does nothing (not even apt-get update) when everything is present.
set -euo pipefail

# Root's PATH usually has the sbin dirs, but sudo-less users' may not.
export PATH="$PATH:/usr/sbin:/sbin"

have() { command -v "$1" >/dev/null 2>&1; }

missing=()
have mariadbd || missing+=(mariadb-server)
have mariadb || missing+=(mariadb-client)
have sysbench || missing+=(sysbench)
have php || missing+=(php-cli)
if ! have php || ! php -r 'exit(extension_loaded("pdo_mysql") ? 0 : 1);' 2>/dev/null; then
  missing+=(php-mysql)
fi
have haproxy || missing+=(haproxy)

if ((${#missing[@]} == 0)); then
  echo "install-deps: all present"
  exit 0
fi

sudo=()
if [[ $EUID -ne 0 ]]; then sudo=(sudo); fi

# Keep the packages' own services (a system mariadb on 3306, haproxy) from being
# started: our tests never use them. Only if no policy is installed already, and
# removed again on exit. A service that is already running is left alone.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\n# sluice install-deps: no service starts during install\nexit 101\n' |
    "${sudo[@]}" tee "$policy" >/dev/null
  "${sudo[@]}" chmod 755 "$policy"
  trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -q
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

# Check that what we need is really there now.
for cmd in mariadbd mariadb mariadb-install-db mariadb-admin sysbench php haproxy; do
  have "$cmd" || { echo "install-deps: $cmd still missing" >&2; exit 1; }
done
php -r 'exit(extension_loaded("pdo_mysql") ? 0 : 1);' ||
  { echo "install-deps: php pdo_mysql still missing" >&2; exit 1; }
echo "install-deps: done"
