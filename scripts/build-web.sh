#!/usr/bin/env bash
# Builds the web client into a folder NGINX serves (no Node needed): web/index.html,
# web/sw.js (the service worker, at the root), and
# web/assets/* moved under /assets/<version>/, where <version> is a hash of their content.
# Asset URLs then never change meaning, so NGINX serves them as immutable for a year; only
# index.html (no-cache) names the current version. Module imports are relative, so every
# module of a page comes from the same version.
#
#   scripts/build-web.sh OUT_DIR
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: build-web.sh OUT_DIR}"
src="$repo/web"
version="$(cd "$src/assets" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)"
tmp="$(mktemp -d "${out%/}.XXXXXX")"
mkdir -p "$tmp/assets/$version"
cp -R "$src/assets/." "$tmp/assets/$version/"
sed "s#\"/assets/#\"/assets/$version/#g" "$src/index.html" >"$tmp/index.html"
# The service worker keeps its URL (/sw.js): a worker's scope is where its script lives.
cp "$src/sw.js" "$tmp/sw.js"
grep -q "/assets/$version/app.js" "$tmp/index.html" || { echo "build-web: index.html names no /assets/app.js" >&2; exit 1; }
chmod -R a+rX "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
echo "$version"
