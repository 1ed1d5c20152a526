#!/usr/bin/env bash
# demo-fastapi.sh: the production shape on one machine, for a person with a
# browser: redis-server, the example FastAPI AI service (clients/python) as
# wsgate's upstream and publisher, `wsgate serve` with a durable AI stream
# route, and the React page (useWsgate, bundled by esbuild) on its own origin.
# It prints the page URL (with dev tokens in its fragment) and runs until
# Ctrl-C, then stops everything it started. Ports: DEMO_GATE_PORT (8081),
# DEMO_PAGE_PORT (8082), DEMO_SERVICE_PORT (8001), DEMO_REDIS_PORT (6390).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
gate_port="${DEMO_GATE_PORT:-8081}"
page_port="${DEMO_PAGE_PORT:-8082}"
service_port="${DEMO_SERVICE_PORT:-8001}"
redis_port="${DEMO_REDIS_PORT:-6390}"
py=/usr/bin/python3

"$root/scripts/test-python.sh" --deps-only
if [ ! -x "$root/clients/js/node_modules/.bin/esbuild" ]; then
  (cd "$root/clients/js" && npm ci --no-audit --no-fund)
fi

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT INT TERM

wait_http() { # wait_http URL WHAT
  for _ in $(seq 100); do
    if curl -fsS -o /dev/null "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "demo-fastapi: $2 did not come up; logs in $tmp" >&2
  exit 1
}

(cd "$root" && go build -o "$tmp/wsgate" ./cmd/wsgate)
secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" --loglevel warning \
  >"$tmp/redis.log" 2>&1 &
pids+=($!)

PYTHONPATH="$root/clients/python" WSGATE_REDIS_URL="redis://127.0.0.1:$redis_port/0" AI_TOKEN_DELAY=0.08 \
  "$py" -s -m uvicorn --app-dir "$root/clients/python/examples" ai_service:app \
  --host 127.0.0.1 --port "$service_port" --log-level warning >"$tmp/ai_service.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$service_port/healthz" "the FastAPI service"

cat >"$tmp/wsgate.yaml" <<YAML
listen: 127.0.0.1:$gate_port
admin_listen: 127.0.0.1:0
allowed_origins: ["http://127.0.0.1:$page_port", "http://localhost:$page_port"]
auth: {hmac_secret: "$secret"}
redis: {url: "redis://127.0.0.1:$redis_port/0"}
routes:
  - path: /ws/ai/stream/{session}
    subscribe: ["ai:stream:{session}"]
    require: {session: sid}
    history: {size: 1000, ttl: 10m}
  - path: /ws/chat
    upstream: ws://127.0.0.1:$service_port/ws/chat
YAML
"$tmp/wsgate" serve --config "$tmp/wsgate.yaml" >"$tmp/wsgate.log" 2>&1 &
pids+=($!)

mkdir "$tmp/page"
"$root/clients/js/node_modules/.bin/esbuild" "$root/clients/js/test/react-page/app.jsx" --bundle --format=esm \
  --jsx=automatic --alias:@wsgate/client/react="$root/clients/js/src/react.js" \
  --define:process.env.NODE_ENV='"production"' --log-level=warning --outfile="$tmp/page/app.js"
printf '%s\n' '<!doctype html><meta charset="utf-8"><title>wsgate + FastAPI</title><div id="root"></div>' \
  '<script type="module" src="/app.js"></script>' >"$tmp/page/index.html"
"$py" -s -m http.server "$page_port" --bind 127.0.0.1 --directory "$tmp/page" >"$tmp/page.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$page_port/" "the page server"

chat="$("$tmp/wsgate" token --secret "$secret" --sub alice --tenant acme --ttl 8h)"
stream="$("$tmp/wsgate" token --secret "$secret" --sub alice --tenant acme --claim sid=demo --ttl 8h)"
cat <<EOF2
wsgate + FastAPI demo (Ctrl-C stops it; logs in $tmp)
  page:     http://127.0.0.1:$page_port/?gate=ws://127.0.0.1:$gate_port&session=demo#chat=$chat&stream=$stream
  service:  http://127.0.0.1:$service_port (FastAPI; wsgate's upstream for /ws/chat, publishes ai:stream:demo)
  wsgate:   ws://127.0.0.1:$gate_port/ws/chat, ws://127.0.0.1:$gate_port/ws/ai/stream/demo (durable)
Type a prompt and press Ask: the service streams the answer through Redis and wsgate into the page.
EOF2
wait -n "${pids[@]}"
