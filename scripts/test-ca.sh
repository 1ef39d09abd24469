#!/usr/bin/env bash
# A throwaway certificate authority and certificates for the TLS tests (bash + openssl).
#
#   scripts/test-ca.sh DIR      # writes what is missing, keeps what is there
#
# DIR then holds (PEM, keys unencrypted, RSA 2048, valid 10 years):
#   ca.pem / ca.key                the test CA
#   server.pem / server.key        SAN IP:127.0.0.1, DNS:localhost  (servers, Sluice)
#   client.pem / client.key        a client certificate (CN=sluice-test-client)
#   wrongname.pem / wrongname.key  SAN DNS:wrong.example only (name-check failures)
#   other-ca.pem / other-ca.key    a second CA that signed none of the above
#
# Sourced, it only defines functions (and leaves the caller's shell options alone):
#   test_ca DIR                                  # the above
#   test_ca_cert DIR NAME SAN [server|client]    # DIR/NAME.pem + DIR/NAME.key signed by
#                                                # DIR/ca.pem; SAN as openssl writes it,
#                                                # e.g. "IP:127.0.0.1,DNS:localhost"
# Files are written to a temporary name and renamed, so a reader (a server, Sluice's
# certificate reload) never sees half a file.

_test_ca_log() { echo "test-ca: $*" >&2; }

# A CA (self-signed) as DIR/NAME.pem + DIR/NAME.key, unless it exists.
_test_ca_root() (
  set -euo pipefail
  local dir=$1 name=$2 subject=$3
  [[ -s "$dir/$name.pem" && -s "$dir/$name.key" ]] && exit 0
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 \
    -subj "$subject" -keyout "$dir/.$name.key.tmp" -out "$dir/.$name.pem.tmp" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  mv "$dir/.$name.key.tmp" "$dir/$name.key"
  mv "$dir/.$name.pem.tmp" "$dir/$name.pem"
)

test_ca_cert() (
  set -euo pipefail
  [[ $# -ge 3 ]] || { _test_ca_log "usage: test_ca_cert DIR NAME SAN [server|client]"; exit 2; }
  local dir=$1 name=$2 san=$3 kind=${4:-server} usage tmp
  [[ -s "$dir/ca.pem" && -s "$dir/ca.key" ]] || { _test_ca_log "ERROR: no CA in $dir (run test_ca first)"; exit 1; }
  if [[ $kind == client ]]; then usage=clientAuth; else usage=serverAuth; fi
  tmp=$(mktemp -d "$dir/.tmp.XXXXXX")
  openssl req -newkey rsa:2048 -nodes -subj "/CN=sluice-test-$name" \
    -keyout "$tmp/key" -out "$tmp/csr" 2>/dev/null
  printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' \
    "$usage" "$san" >"$tmp/ext"
  openssl x509 -req -in "$tmp/csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -CAserial "$dir/ca.srl" -days 3650 -sha256 -extfile "$tmp/ext" -out "$tmp/pem" 2>/dev/null
  # mariadbd runs as this user and must read the key.
  chmod 600 "$tmp/key"
  mv "$tmp/key" "$dir/$name.key"
  mv "$tmp/pem" "$dir/$name.pem"
  rm -rf "$tmp"
)

test_ca() (
  set -euo pipefail
  [[ $# -eq 1 ]] || { _test_ca_log "usage: test_ca DIR"; exit 2; }
  command -v openssl >/dev/null || { _test_ca_log "ERROR: openssl is not installed (scripts/install-deps.sh)"; exit 1; }
  mkdir -p "$1"
  local dir
  dir=$(cd "$1" && pwd -P)
  _test_ca_root "$dir" ca "/CN=Sluice Test CA"
  _test_ca_root "$dir" other-ca "/CN=Sluice Other Test CA"
  [[ -s "$dir/server.pem" && -s "$dir/server.key" ]] || test_ca_cert "$dir" server "IP:127.0.0.1,DNS:localhost"
  [[ -s "$dir/client.pem" && -s "$dir/client.key" ]] || test_ca_cert "$dir" client "DNS:sluice-test-client" client
  [[ -s "$dir/wrongname.pem" && -s "$dir/wrongname.key" ]] || test_ca_cert "$dir" wrongname "DNS:wrong.example"
  exit 0
)

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  [[ $# -eq 1 ]] || { echo "usage: $0 DIR" >&2; exit 2; }
  test_ca "$1"
fi
