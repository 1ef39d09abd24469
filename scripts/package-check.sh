#!/usr/bin/env bash
# Build the .deb from the existing release build, install it on this machine and
# check the installed package: the `sluice` user and group, `sluice --version`,
# `sluice check-config` on the shipped example (run as the sluice user, as the
# unit's ExecStartPre does) and `systemd-analyze verify` on the installed unit.
# The package is purged at the end (the sluice user stays, as Debian leaves system
# users); a sluice package installed before is replaced and purged too.
#
#   cargo build --release --workspace --bins && scripts/package-check.sh
#
# Needs root (or sudo) for dpkg, and cargo-deb (scripts/install-deps.sh installs it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PATH:/usr/sbin:/sbin"

t0=$SECONDS
sudo=()
if [[ $EUID -ne 0 ]]; then sudo=(sudo); fi
out=$(mktemp -d -t sluice-deb.XXXXXX)
cleanup() {
  "${sudo[@]}" dpkg --purge sluice >/dev/null 2>&1 || true
  rm -rf "$out"
}
trap cleanup EXIT
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }

command -v cargo-deb >/dev/null || fail "cargo-deb is missing (run scripts/install-deps.sh)"
target=${CARGO_TARGET_DIR:-target}
[[ -x $target/release/sluice ]] || fail "no release build at $target/release/sluice (cargo build --release first)"

# --no-build: reuse the release build. --strip: the release profile keeps line
# tables (126 MB); the package does not need them. --fast: xz -1 (seconds, not a minute).
cargo deb -p sluice-proxy --no-build --strip --fast -o "$out/" >"$out/cargo-deb.log" 2>&1 ||
  { cat "$out/cargo-deb.log" >&2; fail "cargo deb"; }
deb=$(ls "$out"/sluice_*.deb)
echo "package-check: built $(basename "$deb") ($(($(stat -c %s "$deb") / 1024 / 1024)) MiB)"

# Twice: the second run is the upgrade path (the user exists, the override too).
for pass in install reinstall; do
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive dpkg -i "$deb" >"$out/dpkg.log" 2>&1 ||
    { cat "$out/dpkg.log" >&2; fail "dpkg -i ($pass)"; }
done

getent passwd sluice >/dev/null || fail "no sluice user"
getent group sluice >/dev/null || fail "no sluice group"
conf=/etc/sluice/sluice.toml
[[ $(stat -c '%U:%G %a' "$conf") == "root:sluice 640" ]] || fail "$conf is $(stat -c '%U:%G %a' "$conf")"
dpkg-query -W -f='${Conffiles}\n' sluice | grep -q " $conf " || fail "$conf is not a conffile"

version=$(/usr/bin/sluice --version)
[[ $version == "$("$target/release/sluice" --version)" ]] || fail "installed $version differs from the build"
echo "package-check: installed $version"
"${sudo[@]}" setpriv --reuid=sluice --regid=sluice --init-groups \
  /usr/bin/sluice check-config "$conf" >"$out/check.log" 2>&1 ||
  { cat "$out/check.log" >&2; fail "sluice check-config $conf (as user sluice)"; }
echo "package-check: check-config $conf ok (as user sluice)"

unit=/usr/lib/systemd/system/sluice.service
[[ -f $unit ]] || fail "no $unit"
if command -v systemd-analyze >/dev/null && [[ -d /etc/systemd ]]; then
  # verify exits 0 on "unknown key, ignoring": any output is a failure.
  verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify: $verify"
  [[ -z $verify ]] || fail "systemd-analyze verify: $verify"
  echo "package-check: systemd-analyze verify $unit ok"
else
  echo "package-check: systemd-analyze verify skipped (no systemd-analyze or no /etc/systemd here)"
fi

"${sudo[@]}" dpkg --purge sluice >/dev/null
[[ ! -e $conf ]] || fail "$conf left after purge"
echo "package-check: ok in $((SECONDS - t0)) s"
