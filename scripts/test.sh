#!/bin/sh
# The whole test suite: every test on embedded PGlite, then the database-backed suites again on a
# real PostgreSQL (TEST_DATABASE_URL if set, else a throwaway server started here).
set -eu
cd "$(dirname "$0")/.."
sh scripts/ensure-node-modules.sh
sh scripts/ensure-system-deps.sh
mkdir -p .tmp
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.tmp/vitest-pglite.json "$@" || status=1

pgdir=""
if [ -z "${TEST_DATABASE_URL:-}" ]; then
  pgdir=$(mktemp -d /tmp/kakehashi-pg.XXXXXX)
  TEST_DATABASE_URL=$(sh scripts/pg-test-server.sh start "$pgdir")
  trap 'sh scripts/pg-test-server.sh stop "$pgdir"' EXIT
fi
echo "--- again on PostgreSQL ($TEST_DATABASE_URL)"
TEST_DATABASE_URL=$TEST_DATABASE_URL npx vitest run --reporter=default --reporter=json --outputFile.json=.tmp/vitest-postgres.json \
  test/integration conformance "$@" || status=1
node scripts/summarize-tests.ts .tmp/vitest-pglite.json .tmp/vitest-postgres.json || status=1
exit $status
