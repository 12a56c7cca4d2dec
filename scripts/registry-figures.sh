#!/usr/bin/env bash
# The registry figures of the README: records/s and peak memory of `registry encrypt` over a
# generated file of registrants (about 1 KiB each) and over a PostgreSQL table, with the
# embedded provider and with the Keymanager provider against `kms serve`, next to this
# machine's seal ceiling (one RSA-OAEP encryption + AES-GCM per record, all cores) measured in
# the same run by `bench`.
#
#   cargo build --release -p g2p-keymanager
#   scripts/registry-figures.sh [RECORDS (1000000)] [ROWS (100000)]
#
# Needs python3 (to generate the file), GNU time (/usr/bin/time) and, for the database
# figures, PostgreSQL's initdb/pg_ctl (/usr/lib/postgresql/N/bin); run as root, the server
# runs as nobody.
set -euo pipefail
records=${1:-1000000}
rows=${2:-100000}
bin=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/target/release/g2p-keymanager}
work=$(mktemp -d)
chmod 755 "$work"
trap 'kill $(jobs -p) 2>/dev/null; [ -n "${pgbin:-}" ] && runuser -u nobody -- "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1; rm -rf "$work"' EXIT

python3 - "$records" "$work/registry.jsonl" <<'EOF'
import json, sys
n, path = int(sys.argv[1]), sys.argv[2]
pad = "x" * 700
with open(path, "w") as f:
    for i in range(1, n + 1):
        f.write(json.dumps({"id": i, "is_registrant": i % 10 != 0, "name": f"Person {i} Ñúñez",
            "given_name": f"Given{i}", "family_name": f"Family {i}", "address": f"{i} Market Road, Kano",
            "birth_place": "Kano", "phone": f"080{i:08d}", "email": f"p{i}@example.org",
            "gender": "F" if i % 2 else "M", "notes": pad}) + "\n")
EOF
echo "input: $records registrants, $(du -m "$work/registry.jsonl" | cut -f1) MiB"

export G2P_DATA_DIR="$work/data"
ceiling=$("$bin" bench --op encrypt --duration 5 --concurrency 32 --json 2>/dev/null |
    python3 -c 'import json,sys; print(round(json.load(sys.stdin)["ceiling_ops_per_sec"]))')
echo "seal ceiling (bench, all cores): $ceiling per second"

# run LABEL COMMAND...: records/s from the summary line, peak RSS from GNU time.
run() {
    local label=$1; shift
    /usr/bin/time -v "$@" 2> "$work/err" >/dev/null || { cat "$work/err"; exit 1; }
    python3 - "$label" "$ceiling" "$work/err" <<'EOF'
import re, sys
label, ceiling, text = sys.argv[1], int(sys.argv[2]), open(sys.argv[3]).read()
m = re.search(r"read (\d+), \w+ (\d+), .* in ([\d.]+) s \((\d+) records/s\)", text)
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
read, done, secs, rate = int(m.group(1)), int(m.group(2)), float(m.group(3)), int(m.group(4))
print(f"| {label} | {read:,} | {done:,} | {secs:.1f} s | {rate:,} | {100 * rate / ceiling:.0f} % | {rss:.1f} MiB |")
EOF
}

echo
echo "| run | records | encrypted | time | records/s | of the seal ceiling | peak memory |"
echo "|---|---:|---:|---:|---:|---:|---:|"
run "file, embedded provider" "$bin" registry encrypt --in "$work/registry.jsonl" --out "$work/sealed.jsonl"

"$bin" kms serve --listen 127.0.0.1:0 --client app:app-secret --data-dir "$work/kms" > "$work/kms.out" 2> "$work/kms.err" &
for _ in $(seq 100); do [ -s "$work/kms.out" ] && break; sleep 0.1; done
url=$(head -1 "$work/kms.out")
keymanager() {
    KEYMANAGER_API_BASE_URL="$url/v1/keymanager" \
    KEYMANAGER_AUTH_URL="$url/realms/openg2p/protocol/openid-connect/token" \
    KEYMANAGER_AUTH_CLIENT_ID=app KEYMANAGER_AUTH_CLIENT_SECRET=app-secret "$@"
}
keymanager run "file, Keymanager provider → kms serve" "$bin" registry encrypt --in "$work/registry.jsonl" --out "$work/sealed-km.jsonl"

pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [ -z "$pgbin" ]; then
    echo "PostgreSQL not installed: no database figures"
    exit 0
fi
mkdir "$work/pgsock" "$work/pg" && chown nobody "$work/pgsock" "$work/pg"
runuser -u nobody -- "$pgbin/initdb" -D "$work/pg" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
runuser -u nobody -- "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pgsock/log" -w \
    -o "-p $port -k $work/pgsock -c listen_addresses=127.0.0.1" start >/dev/null
echo "PostgreSQL: $("$pgbin/postgres" --version), $rows rows"
db="postgres://postgres@127.0.0.1:$port/postgres"
fill() {
    "$pgbin/psql" -q "$db" <<EOF
DROP TABLE IF EXISTS res_partner;
CREATE TABLE res_partner (id serial PRIMARY KEY, name varchar, family_name varchar, given_name varchar,
    addl_name varchar, display_name varchar, address text, birth_place varchar, phone varchar,
    email varchar, notes text, is_registrant boolean, is_encrypted boolean, encrypted_val bytea);
INSERT INTO res_partner (name, given_name, family_name, address, birth_place, phone, email, notes, is_registrant)
SELECT 'Person ' || i || ' Ñúñez', 'Given' || i, 'Family ' || i, i || ' Market Road, Kano', 'Kano',
       '080' || i, 'p' || i || '@example.org', repeat('x', 700), i % 10 <> 0
FROM generate_series(1, $rows) AS i;
VACUUM ANALYZE res_partner;
EOF
}
fill
run "PostgreSQL, embedded provider" "$bin" registry encrypt --database-url "$db"
fill
keymanager run "PostgreSQL, Keymanager provider → kms serve" "$bin" registry encrypt --database-url "$db"
