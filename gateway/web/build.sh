#!/bin/sh
# Builds corral's web page into dist/ (index.html, app.js, app.css), which is committed: the
# Rust build embeds dist/ and never needs node. Needs node ≥ 20 and npm; run from anywhere.
#   ./build.sh            npm ci, type-check, unit tests, bundle
#   SKIP_CI=1 ./build.sh  reuse node_modules as they are
set -eu
cd "$(dirname "$0")"

if [ "${SKIP_CI:-}" != 1 ] || [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

# Type-check (esbuild only strips types), then the pure helpers' unit tests.
npx --no-install tsc --noEmit -p .
npx --no-install esbuild src/format.test.ts src/agentlines.test.ts --bundle --platform=node --format=esm \
  --outdir=node_modules/.cache/corral-test --out-extension:.js=.mjs --log-level=warning
node --test --test-reporter=dot node_modules/.cache/corral-test/*.test.mjs

rm -rf dist
mkdir -p dist
npx --no-install esbuild src/main.ts --bundle --minify --format=esm --target=es2022 \
  --outfile=dist/app.js --legal-comments=eof --log-level=warning

# Fixed names (simple to embed); the URLs carry a content hash so browsers never mix versions.
js=$(sha256sum dist/app.js | cut -c1-12)
css=$(sha256sum dist/app.css | cut -c1-12)
sed -e "s|href=\"app.css\"|href=\"app.css?v=$css\"|" -e "s|src=\"app.js\"|src=\"app.js?v=$js\"|" \
  src/index.html > dist/index.html

# Pre-compressed copies: the server sends them to browsers that accept gzip (no compression
# at run time, no compression crate in the server). -n: no name or time, so builds are stable.
for f in dist/index.html dist/app.js dist/app.css; do
  gzip -9 -n -k -f "$f"
done

for f in dist/index.html dist/app.js dist/app.css; do
  printf '%-16s %8d bytes  %7d gzip\n' "$f" "$(wc -c < "$f")" "$(gzip -9c "$f" | wc -c)"
done
