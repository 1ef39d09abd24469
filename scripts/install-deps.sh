#!/usr/bin/env bash
# Install what the tests and benchmarks need (Debian 12): system packages from
# Debian, the real-driver checks' drivers (tests/drivers/) from PyPI and npm, and
# cargo-deb (the package check) from crates.io.
# Idempotent: does nothing (not even apt-get update) when everything is present.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Root's PATH usually has the sbin dirs, but sudo-less users' may not.
export PATH="$PATH:/usr/sbin:/sbin"

have() { command -v "$1" >/dev/null 2>&1; }

# MariaDB Connector/J, as Debian installs it (tests/drivers/DriverChecks.java).
MARIADB_JAR=/usr/share/java/mariadb-java-client.jar
# The Python drivers' virtualenv and the Node project (both gitignored outputs).
DRIVERS=tests/drivers
VENV=$DRIVERS/.venv

missing=()
have mariadbd || missing+=(mariadb-server)
have mariadb || missing+=(mariadb-client)
have sysbench || missing+=(sysbench)
have php || missing+=(php-cli)
if ! have php || ! php -r 'exit(extension_loaded("pdo_mysql") ? 0 : 1);' 2>/dev/null; then
  missing+=(php-mysql)
fi
have haproxy || missing+=(haproxy)
# The TLS tests' certificates (scripts/test-ca.sh).
have openssl || missing+=(openssl)
[[ -f $MARIADB_JAR ]] || missing+=(libmariadb-java)
# Java 11+ runs a single-file program without a build step; javac's presence
# tells a JDK from a bare JRE.
have javac || missing+=(default-jdk-headless)
have python3 || missing+=(python3)
if ! have python3 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing+=(python3-venv)
fi
have node || missing+=(nodejs)
have npm || missing+=(npm)
# scripts/package-check.sh: `systemd-analyze verify` on the packaged unit.
have systemd-analyze || missing+=(systemd)
# promtool lints the /metrics exposition (tests/tests/metrics.rs). Debian ships
# it only in the server package (a 19 MB download); its service is neither
# started (policy below) nor left enabled.
have promtool || missing+=(prometheus)

did=0
if ((${#missing[@]})); then
  did=1
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

  # Only promtool is wanted from the prometheus package: keep its server
  # (enabled by the package, not started thanks to the policy) off at boot.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && have systemctl; then
    "${sudo[@]}" systemctl disable prometheus.service >/dev/null 2>&1 || true
  fi

  # Check that what we need is really there now.
  for cmd in mariadbd mariadb mariadb-install-db mariadb-admin sysbench php haproxy openssl java javac python3 node npm systemd-analyze promtool; do
    have "$cmd" || { echo "install-deps: $cmd still missing" >&2; exit 1; }
  done
  php -r 'exit(extension_loaded("pdo_mysql") ? 0 : 1);' ||
    { echo "install-deps: php pdo_mysql still missing" >&2; exit 1; }
  [[ -f $MARIADB_JAR ]] || { echo "install-deps: $MARIADB_JAR still missing" >&2; exit 1; }
fi

# Python drivers (PyMySQL, mysql-connector-python) in a virtualenv of our own,
# at the versions in requirements.txt. A stamp holding that file's contents
# makes the next run a no-op.
stamp=$VENV/.sluice-requirements
if [[ ! -x $VENV/bin/python ]] || ! cmp -s "$DRIVERS/requirements.txt" "$stamp" ||
  ! "$VENV/bin/python" -c 'import pymysql, mysql.connector' 2>/dev/null; then
  did=1
  echo "install-deps: Python drivers into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-input -r "$DRIVERS/requirements.txt"
  "$VENV/bin/python" -c 'import pymysql, mysql.connector' ||
    { echo "install-deps: Python drivers do not import" >&2; exit 1; }
  cp "$DRIVERS/requirements.txt" "$stamp"
fi

# Node mysql2, exactly as package-lock.json pins it (npm ci writes
# node_modules/.package-lock.json, newer than the lock file once done).
node_dir=$DRIVERS/node
if [[ ! -d $node_dir/node_modules/mysql2 || $node_dir/package-lock.json -nt $node_dir/node_modules/.package-lock.json ]]; then
  did=1
  echo "install-deps: Node drivers into $node_dir/node_modules"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# cargo-deb (scripts/package-check.sh builds the .deb with it), at a pinned
# version with its own lock file; built from crates.io once (about 2.5 min).
CARGO_DEB_VERSION=3.8.0
if [[ $(cargo deb --version 2>/dev/null) != "cargo-deb $CARGO_DEB_VERSION" ]]; then
  did=1
  echo "install-deps: cargo-deb $CARGO_DEB_VERSION"
  cargo install --locked --quiet cargo-deb --version "$CARGO_DEB_VERSION"
fi

if ((did)); then echo "install-deps: done"; else echo "install-deps: all present"; fi
