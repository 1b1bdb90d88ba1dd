#!/bin/sh
# Installs the project's packages (including Node 24, as the npm package `node`) on a fresh clone.
set -eu
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/node ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
