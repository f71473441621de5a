#!/bin/sh
# Install the peer systems of the benchmark (Yjs + y-websocket) with npm into
# target/bench-peers (or $BLAZEDB_BENCH_PEERS). Run by hand before
# `cargo run -p blazedb-bench --release -- --only net_peer_yjs`; never by tests or CI.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dest="${BLAZEDB_BENCH_PEERS:-$root/target/bench-peers}"
command -v node >/dev/null || { echo "install.sh: node is not installed (Node.js >= 18 needed)" >&2; exit 1; }
command -v npm >/dev/null || { echo "install.sh: npm is not installed" >&2; exit 1; }
mkdir -p "$dest"
cp "$here/package.json" "$dest/package.json"
cd "$dest"
npm install --no-audit --no-fund --omit=optional
test -f node_modules/y-websocket/bin/server.js || {
  echo "install.sh: y-websocket installed without bin/server.js: check the pinned version" >&2
  exit 1
}
echo "installed into $dest"
