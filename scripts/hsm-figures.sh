#!/usr/bin/env bash
# The HSM figures of the README: decrypt and jwtSign throughput of `kms serve` with the
# key-encryption key in a file and in a PKCS#11 token (SoftHSM2, a throwaway token), caches
# warm, each against the RSA private-operation ceiling measured in the same run; then what one
# cold unwrap costs with each (`g2p-load kek`).
#
#   cargo build --release -p g2p-keymanager -p g2p-load
#   scripts/hsm-figures.sh [CLIENTS (64)] [SECONDS (5)]
set -euo pipefail
clients=${1:-64}
seconds=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
module=""
for candidate in /usr/lib/softhsm/libsofthsm2.so /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so; do
    [ -e "$candidate" ] && module=$candidate && break
done
if [ -z "$module" ] || ! command -v softhsm2-util >/dev/null; then
    echo "SoftHSM2 is not installed (apt-get install softhsm2)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir "$work/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$work/tokens" > "$work/softhsm2.conf"
export SOFTHSM2_CONF="$work/softhsm2.conf"
pin=$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' | head -c 12)
softhsm2-util --init-token --free --label g2p-figures --so-pin "$pin" --pin "$pin" >/dev/null
cd "$root"
echo "== key-encryption key in a file"
target/release/g2p-load kms --clients "$clients" --seconds "$seconds"
echo
echo "== key-encryption key in a PKCS#11 token ($(softhsm2-util --version 2>/dev/null | head -1 | sed 's/^/SoftHSM /'))"
target/release/g2p-load kms --clients "$clients" --seconds "$seconds" \
    --serve-arg=--kek --serve-arg=pkcs11 --serve-arg=--pkcs11-module --serve-arg="$module" \
    --serve-arg=--pkcs11-token-label --serve-arg=g2p-figures \
    --serve-env "SOFTHSM2_CONF=$SOFTHSM2_CONF" --serve-env "G2P_KMS_PKCS11_PIN=$pin"
echo
echo "== one cold unwrap"
G2P_KMS_PKCS11_PIN="$pin" target/release/g2p-load kek --pkcs11-module "$module" --pkcs11-token-label g2p-figures
