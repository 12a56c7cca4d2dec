#!/usr/bin/env bash
# The replica figures of the README: decrypt and jwtSign throughput of one `kms serve` replica
# and of two over one PostgreSQL database, against the RSA private-operation ceiling measured
# in the same run, and the time a rotation through one replica takes to be seen through the
# other. Starts a throwaway PostgreSQL cluster (as nobody; run as root) and removes it.
#
#   cargo build --release -p g2p-keymanager -p g2p-load
#   scripts/replica-figures.sh [CLIENTS (64)] [SECONDS (5)]
set -euo pipefail
clients=${1:-64}
seconds=${2:-5}
root=$(cd "$(dirname "$0")/.." && pwd)
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$pgbin" ]; then
    echo "PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 1
fi
work=$(mktemp -d)
chmod 755 "$work"
trap 'runuser -u nobody -- "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1; rm -rf "$work"' EXIT
mkdir "$work/pgsock" "$work/pg" && chown nobody "$work/pgsock" "$work/pg"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u nobody -- "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
runuser -u nobody -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pgsock/log" -w \
    -o "-p $port -k $work/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
echo "PostgreSQL: $("$pgbin/postgres" --version)"
cd "$root"
target/release/g2p-load replicas --clients "$clients" --seconds "$seconds" \
    --database-url "postgres://postgres@127.0.0.1:$port/postgres"
