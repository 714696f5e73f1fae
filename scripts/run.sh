#!/bin/sh
# make run: starts llmcached in the foreground on 127.0.0.1:8080 with the
# embedded default: in-memory cache plus an on-disk tier in ./data. Without
# an upstream key it talks to the built-in mock model and says so.
# Extra options: LLMC_RUN_ARGS="--ttl 60 --threads 2" make run
BIN=${1:-build/llmcached}
set -- --data-dir "${LLMC_DATA_DIR:-./data}"
if [ -z "$LLMC_UPSTREAM_KEY" ] && [ -z "$OPENAI_API_KEY" ]; then
    echo "make run: no LLMC_UPSTREAM_KEY or OPENAI_API_KEY set: answering with the built-in mock model" >&2
    set -- "$@" --upstream mock
fi
# shellcheck disable=SC2086
exec "$BIN" "$@" $LLMC_RUN_ARGS
