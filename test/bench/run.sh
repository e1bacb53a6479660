#!/usr/bin/env bash
# npm run bench [-- SECTION...]: runs the benchmark sections (all by default) and prints one
# line per measurement. Needs the same host setup as the integration tests (root, QEMU, musl).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec npx tsx test/bench/index.ts "$@"
