#!/usr/bin/env bash
# The README's test command (npm test): sets the machine up itself, then runs every unit and
# integration test. The last line is always "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

# npm ci leaves node_modules/.package-lock.json behind: a newer package-lock.json means a stale install.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> npm ci"
  npm ci --no-audit --no-fund
fi

echo "==> lhc setup"
node --import tsx src/cli-entry.ts setup

report_dir="$(mktemp -d)"
trap 'rm -rf "$report_dir"' EXIT
report="$report_dir/vitest.json"

# Arguments narrow the run to some test files (e.g. test/run.sh test/unit/config.test.ts).
if [ "$#" -gt 0 ]; then targets=("$@"); else targets=(test/unit test/integration); fi

echo "==> vitest"
status=0
npx vitest run -c .config/vitest.config.ts \
  --reporter=default --reporter=json --outputFile.json="$report" \
  "${targets[@]}" || status=$?

summary="$(node -e '
const fs = require("node:fs");
let r;
try { r = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); } catch { console.log("0 passed, 0 failed"); process.exit(3); }
// A file that fails to load has no test results but must still count as a failure.
const brokenFiles = (r.testResults || []).filter((f) => f.status === "failed" && !(f.assertionResults || []).some((a) => a.status === "failed")).length;
const passed = r.numPassedTests, failed = r.numFailedTests + brokenFiles;
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed > 0 || passed === 0 ? 1 : 0);
' "$report")" || status=1
if [ -z "$summary" ]; then summary="0 passed, 0 failed"; status=1; fi
echo "$summary"
exit "$status"
