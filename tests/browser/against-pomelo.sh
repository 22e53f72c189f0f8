#!/usr/bin/env bash
# The web client against the original Node.js Pomelo chat (../shared/peer-pomelo), JSON and
# protobuf: `make test-pomelo`. Not part of `make test`: it installs pomelo@2.2.7 from npm and
# takes the chatofpomelo ports (3014, 3050, 3051, 3001), so nothing else may hold them.
set -euo pipefail
cd "$(dirname "$0")/../.."
PEER=run/bench/peer-pomelo
SRC=${PEER_POMELO:-../shared/peer-pomelo}
if [ ! -d "$PEER/node_modules/pomelo" ]; then
  rm -rf "$PEER"; mkdir -p run/bench; cp -r "$SRC" "$PEER"
  (cd "$PEER" && npm install --no-audit --no-fund --silent)
fi
cargo build --release --bin shaddock -q
target/release/shaddock web --port 3001 --bind 127.0.0.1 >/dev/null 2>&1 &
WEB=$!
trap 'kill $WEB 2>/dev/null; (cd "$PEER" && ./run.sh stop >/dev/null 2>&1)' EXIT
for proto in 0 1; do
  (cd "$PEER" && CHAT_PROTOBUF=$proto ./run.sh start >/dev/null)
  (cd tests/browser && node chat.mjs "http://127.0.0.1:3001/?gate=127.0.0.1:3014" "../../run/bench/pomelo-web-$proto.png")
  (cd "$PEER" && ./run.sh stop >/dev/null)
done
echo "the web client works against Node Pomelo (JSON and protobuf)"
