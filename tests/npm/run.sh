#!/bin/sh
# Runs the official-openai-client test (node:test). Installs the pinned client
# from package-lock.json first when node_modules is missing or older than the lock.
# LLMC_BIN names the gateway binary (default: build/llmcached of this repo).
set -e
cd "$(dirname "$0")"
if [ ! -d node_modules/openai ] || [ ! -d node_modules/@anthropic-ai/sdk ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test
