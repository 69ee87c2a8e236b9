#!/usr/bin/env bash
# Makes a throwaway PKI for ratingd's TLS: a CA, a server certificate for localhost and 127.0.0.1,
# a client certificate signed by the CA (mutual TLS), and a second, untrusted CA with a client
# certificate of its own (for the refusal test). EC P-256 keys, valid 30 days. For tests and the
# worked example of docs/security.md; use your own PKI in production.
#
#   tests/tls/gen-certs.sh OUT_DIR
set -euo pipefail
out=${1:?usage: gen-certs.sh OUT_DIR}
mkdir -p "$out"
cd "$out"
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is needed (apt-get install -y openssl)" >&2; exit 1; }

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() { # name subject
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days 30 -subj "/CN=$2" -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

leaf() { # name subject ca usage [san]
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$4"
    if [ -n "${5:-}" ]; then echo "subjectAltName=$5"; fi
  } > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -sha256 -days 30 \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "ratingd test CA"
leaf server "ratingd" ca serverAuth "DNS:localhost,IP:127.0.0.1"
leaf client "metering-agent" ca clientAuth
ca rogue-ca "someone else's CA"
leaf rogue-client "metering-agent" rogue-ca clientAuth
rm -f ./*.srl
echo "gen-certs.sh: wrote ca, server, client, rogue-ca, rogue-client (.pem, .key) to $out"
