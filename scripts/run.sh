#!/usr/bin/env bash
# Serves the gateway from Caddyfile.example. On first start it creates a demo workspace with
# $25 of credits and keeps its key in ./data/demo-key; then it prints the call to try.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
if [ ! -s data/demo-key ]; then
  out=$(./caddy btl workspace create --config Caddyfile.example --adapter caddyfile --name demo --credits 25 2>/dev/null)
  key=$(printf '%s' "$out" | sed -n 's/.*"api_key":"\([^"]*\)".*/\1/p')
  if [ -z "$key" ]; then
    echo "could not create the demo workspace: $out" >&2
    exit 1
  fi
  umask 077
  printf '%s\n' "$key" > data/demo-key
  echo "Created the demo workspace (\$25 of credits): $out"
fi
KEY=$(cat data/demo-key)
cat <<MSG

  BTL Runtime on http://localhost:8080/v1
  (simulated upstream unless OPENAI_API_KEY / OPENROUTER_API_KEY are set)

  Your demo API key: $KEY

  Try it with the OpenAI SDK (only base_url changes):

    from openai import OpenAI
    client = OpenAI(base_url="http://localhost:8080/v1", api_key="$KEY")
    print(client.chat.completions.create(model="btl-fast",
          messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)

  or curl:

    curl -s http://localhost:8080/v1/chat/completions -H "Authorization: Bearer $KEY" \\
      -H 'Content-Type: application/json' \\
      -d '{"model":"btl-fast","messages":[{"role":"user","content":"Hello!"}]}'

  Every slug answers: btl-frontier, btl-balanced, btl-fast, btl-reasoning (chat) and
  btl-embed (client.embeddings.create).

  See a saving: send one long system prompt twice. The gateway marks it for the upstream's
  prompt cache, so the second call is billed mostly at the cached rate:

    SYSTEM=\$(printf 'Policy %s: answer politely, cite the handbook, never invent prices. ' \$(seq 1 120))
    for q in 'Where is my order?' 'Can I return a gift?'; do
      curl -s -o /dev/null -D - http://localhost:8080/v1/chat/completions \\
        -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \\
        -d "{\\"model\\":\\"btl-balanced\\",\\"messages\\":[{\\"role\\":\\"system\\",\\"content\\":\\"\$SYSTEM\\"},{\\"role\\":\\"user\\",\\"content\\":\\"\$q\\"}]}" \\
        | grep -i '^x-btl-\\(cost\\|baseline\\)'
    done

  x-btl-cost-usd is what the call cost, x-btl-baseline-usd what it would have cost sent
  directly. Savings per lever: http://localhost:8080/dashboard (sign in with the key above)
  or curl -s http://localhost:8080/v1/usage/summary -H "Authorization: Bearer $KEY"

  Dashboard (usage, API keys, top-ups): http://localhost:8080/dashboard — sign in with the key.

MSG
exec ./caddy run --config Caddyfile.example --adapter caddyfile
