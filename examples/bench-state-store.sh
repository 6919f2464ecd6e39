#!/usr/bin/env bash
# Audited calls per second on one node, on each state store: `warden bench hello` (release
# build) at concurrency 1 and 8 against SQLite (the embedded default) and PostgreSQL (the
# local server `.ci/postgres` makes ready, as root; or WARDEN_TEST_POSTGRES_URL with
# WARDEN_TEST_POSTGRES_PASSWORD), with the decision and state store latency percentiles.
#
#   examples/bench-state-store.sh [CALLS]      (default 5000 calls per run)
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-5000}
cargo build --release -q -p warden-cli
warden=$PWD/target/release/warden
tools=$(ls -d target/release/build/warden-test-support-*/out/tools | head -1)

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/tools" "$dir/policies"
cp -r "$tools/hello" "$dir/tools/"
key=$("$warden" keygen --out "$dir/bench.key")
cat > "$dir/warden.toml" <<TOML
state_dir = "state"
tool_dirs = ["tools"]
[agents.bench]
public_key = "$key"
TOML
echo 'permit(principal == Agent::"bench", action == Action::"invoke", resource == Tool::"hello");' \
    > "$dir/policies/bench.cedar"

if [ -n "${WARDEN_TEST_POSTGRES_URL:-}" ]; then
    url=$WARDEN_TEST_POSTGRES_URL
    password=${WARDEN_TEST_POSTGRES_PASSWORD:?}
else
    .ci/postgres "${TMPDIR:-/tmp}/warden-test-postgres/password"
    url=postgres://warden_test@127.0.0.1:5432/warden_test
    password=$(cat "${TMPDIR:-/tmp}/warden-test-postgres/password")
fi
schema=bench_$(date +%s)
PGPASSWORD=$password psql -q "$url" -c "CREATE SCHEMA $schema"
cp "$dir/warden.toml" "$dir/postgres.toml"
cat >> "$dir/postgres.toml" <<TOML
[secrets.state]
env = "WARDEN_BENCH_STATE_PASSWORD"
[state]
url = "$url?options=-csearch_path%3D$schema"
password = "state"
TOML
export WARDEN_BENCH_STATE_PASSWORD=$password

for store in sqlite postgres; do
    config=$dir/warden.toml
    [ $store = postgres ] && config=$dir/postgres.toml
    for concurrency in 1 8; do
        echo -n "$store, concurrency $concurrency: "
        "$warden" --config "$config" bench hello --agent bench --agent-key "$dir/bench.key" \
            --input '{"name":"Ada"}' --calls "$calls" --concurrency "$concurrency" 2>&1 | tail -1
    done
done
PGPASSWORD=$password psql -q "$url" -c "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE"
