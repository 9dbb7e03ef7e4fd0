#!/usr/bin/env bash
# Refreshes the dashboard's copy of Chart.js (served with the page: no CDN, so it works in an
# offline cluster). The copy is committed; run this only to move to another version.
set -euo pipefail
VERSION="${1:-4.5.1}"
DEST="$(cd "$(dirname "$0")/.." && pwd)/lime_task/server/dashboard/static/vendor"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
(cd "$WORK" && npm pack --silent "chart.js@$VERSION" >/dev/null && tar xzf "chart.js-$VERSION.tgz")
cp "$WORK/package/dist/chart.umd.min.js" "$DEST/chart.umd.min.js"
cp "$WORK/package/LICENSE.md" "$DEST/chart.js-LICENSE.md"
echo "$VERSION $(sha256sum "$DEST/chart.umd.min.js" | cut -d' ' -f1)" > "$DEST/chart.js-VERSION"
echo "Chart.js $VERSION copied to $DEST"
