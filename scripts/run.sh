#!/usr/bin/env bash
# Serves the gateway from Caddyfile.example and prints the call to try.
set -euo pipefail
cd "$(dirname "$0")/.."
cat <<'MSG'

  BTL Runtime on http://localhost:8080/v1 (simulated upstream unless OPENAI_API_KEY / OPENROUTER_API_KEY are set)

  Try it with the OpenAI SDK (only base_url changes):

    from openai import OpenAI
    client = OpenAI(base_url="http://localhost:8080/v1", api_key="any")
    print(client.chat.completions.create(model="btl-fast",
          messages=[{"role": "user", "content": "Hello!"}]).choices[0].message.content)

  or curl:

    curl -s http://localhost:8080/v1/chat/completions -H 'Content-Type: application/json' \
      -d '{"model":"btl-fast","messages":[{"role":"user","content":"Hello!"}]}'

MSG
exec ./caddy run --config Caddyfile.example --adapter caddyfile
