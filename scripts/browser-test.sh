#!/usr/bin/env bash
# End-to-end tests of the segment editor page in a real browser: Debian's
# Chromium, driven by Playwright (playwright-core, which downloads no
# browser), against two real servers on free ports:
#   - keys off, with the CDNOW purchase history imported into `cdnow`;
#   - keys on, with a tenant `shop` of three customers and one API key.
# Installs Chromium (apt, as root) and the test's npm package if missing.
# The screenshot of the page is kept at target/browser/editor.png, the
# servers' logs beside it.
#
#   scripts/browser-test.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "browser-test.sh: no Chromium at $chromium; install Debian's chromium package" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
"$chromium" --version 2>/dev/null
node_major=$(node --version 2>/dev/null | sed -E 's/^v([0-9]+).*/\1/')
if [[ -z $node_major || $node_major -lt 18 ]]; then
  echo "browser-test.sh: Node.js 18 or newer is needed (found: $(node --version 2>&1))" >&2
  exit 1
fi
(cd tests/browser && npm ci --no-audit --no-fund --silent)
echo "node $(node --version), playwright-core $(node -p 'require("./tests/browser/node_modules/playwright-core/package.json").version')"

cargo build --locked --quiet
bin="$root/target/debug/segmentd"
work=$(mktemp -d)
servers=()
cleanup() {
  for pid in "${servers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${servers[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  # The servers' logs stay for a look after a failure.
  mkdir -p "$root/target/browser"
  cp "$work"/*.log "$root/target/browser/" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_for() {
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "browser-test.sh: nothing listens on port $1" >&2
  exit 1
}

open_port=$(free_port)
"$bin" serve --listen "127.0.0.1:$open_port" --data "$work/open" --metrics-listen off \
  2>"$work/open.log" &
servers+=($!)
wait_for "$open_port"
"$bin" import --server "127.0.0.1:$open_port" --tenant cdnow --format cdnow data/cdnow/CDNOW_master.txt

admin_key="browser-test-admin-$(date +%s%N)"
keyed_port=$(free_port)
SEGMENTD_ADMIN_KEY="$admin_key" "$bin" serve --listen "127.0.0.1:$keyed_port" \
  --data "$work/keyed" --metrics-listen off 2>"$work/keyed.log" &
servers+=($!)
wait_for "$keyed_port"
keyed="127.0.0.1:$keyed_port"
"$bin" admin create-tenant --server "$keyed" --api-key "$admin_key" --tenant shop >/dev/null
"$bin" admin create-tenant --server "$keyed" --api-key "$admin_key" --tenant elsewhere >/dev/null
shop_key=$("$bin" admin create-key --server "$keyed" --api-key "$admin_key" --tenant shop \
  --label browser-test | grep -o 'sgd_[A-Za-z0-9_-]*' | head -1)
[[ -n $shop_key ]] || { echo "browser-test.sh: no key was issued" >&2; exit 1; }
# Three customers, two of them opted in, written with the tenant's key.
cat >"$work/shop.csv" <<'EOF'
Customer ID,First Name,Last Name,Email,Accepts Email Marketing,Accepts SMS Marketing,Tags,Province Code,Country Code,Total Spent
s1,Ada,L,ada@example.com,yes,yes,vip,CA,US,120.00
s2,Bo,M,bo@example.com,no,yes,,NY,US,10.00
s3,Cy,N,cy@example.com,no,no,,TX,US,0.00
EOF
"$bin" import --server "$keyed" --api-key "$shop_key" --tenant shop --format shopify-customers \
  "$work/shop.csv"

mkdir -p target/browser
SEGMENTD_URL="http://127.0.0.1:$open_port" \
SEGMENTD_KEYED_URL="http://$keyed" \
SEGMENTD_SHOP_KEY="$shop_key" \
CDNOW_FILE="$root/data/cdnow/CDNOW_master.txt" \
SCREENSHOT="$root/target/browser/editor.png" \
CHROMIUM="$chromium" \
  node tests/browser/editor.test.mjs
echo "screenshot: target/browser/editor.png"
