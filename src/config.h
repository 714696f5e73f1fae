/*
 * config.h: every option of llmcached, in one table.
 *
 * The table below makes the config struct, the parser for flags
 * (--name VALUE, --name=VALUE), environment variables (LLMC_NAME, dashes
 * become underscores) and config files (name = value lines, # comments),
 * --help, and docs/CONFIG.md (llmcached --help-markdown). Defaults live
 * nowhere else.
 *
 * Precedence, lowest first: defaults, the --config file, the environment,
 * flags. A bad value stops start-up with a message naming the option.
 *
 * Types: STR (any string), INT (integer within min..max), BOOL (on/off,
 * true/false, yes/no, 1/0), SIZE (bytes, with K/M/G suffixes, powers of
 * 1024), SECS (seconds, may be fractional, optional ms/s/m/h suffix; stored
 * in milliseconds), RATIO (a fraction, 0.7 or 70%; stored in thousandths,
 * min/max too), ENUM (one of the option's words, in any case; stored as
 * its enum value), WORD_OR_STR (one of the option's words, stored as its
 * enum value, or any other string, which sets the enum's last value and is
 * kept in a text field: how --access-log tells 'off' from a path; its words
 * are matched exactly, so a file called OFF is still a file), LIST (a
 * repeatable option: every occurrence, from the file, the environment or
 * the flags, adds its comma-separated items to the list, kept as one
 * comma-separated string).
 *
 * The words of an ENUM or WORD_OR_STR option are a list of their own, named
 * in its row (LLMC_CFG_<FIELD>_WORDS, below the table). The list makes the
 * option's enum type llmc_cfg_<field>_t, the parser's words, --help and the
 * docs, so a value becomes an enum once, at start-up, and no code compares
 * option strings after it.
 */
#ifndef LLMC_CONFIG_H
#define LLMC_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef enum llmc_opt_type {
    LLMC_OPT_STR, LLMC_OPT_INT, LLMC_OPT_BOOL, LLMC_OPT_SIZE, LLMC_OPT_SECS, LLMC_OPT_ENUM,
    LLMC_OPT_WORD_OR_STR, LLMC_OPT_RATIO, LLMC_OPT_LIST
} llmc_opt_type_t;

/* X(field, "name", TYPE, "default", min, max, WORDS, "description")
   min/max bound INT, SIZE (bytes) and SECS (milliseconds). WORDS names the
   word list of an ENUM or WORD_OR_STR option; NULL for the other types. */
#define LLMC_CONFIG_TABLE(X)                                                                  \
    X(listen, "listen", STR, "127.0.0.1:8080", 0, 0, NULL,                                    \
      "Address to listen on, HOST:PORT (IPv6 as [::1]:PORT).")                                \
    X(allowed_host, "allowed-host", LIST, "", 0, 0, NULL,                                     \
      "A Host name (or name:port) clients may use, repeatable. On a loopback --listen, "      \
      "localhost, 127.0.0.1, [::1] and the listen address are taken too (DNS rebinding "     \
      "is refused); on any other, Host is checked only when this is given. Others: 421.")    \
    X(cors_origin, "cors-origin", LIST, "", 0, 0, NULL,                                       \
      "A browser Origin allowed to call the gateway (scheme://host[:port], or '*'), "         \
      "repeatable; it gets CORS headers and preflights answered. A request with another "     \
      "Origin is refused (403); requests without one are not affected.")                     \
    X(threads, "threads", INT, "0", 0, 256, NULL,                                             \
      "Event-loop threads; 0 means one per CPU core.")                                        \
    X(upstream, "upstream", WORD_OR_STR, "https://api.openai.com/v1", 0, 0,                   \
      LLMC_CFG_UPSTREAM_WORDS,                                                                \
      "OpenAI-style base URL of the model API, or 'mock' for the built-in mock model.")       \
    X(anthropic_upstream, "anthropic-upstream", WORD_OR_STR, "auto", 0, 0,                    \
      LLMC_CFG_ANTHROPIC_UPSTREAM_WORDS,                                                      \
      "Anthropic Messages base URL for POST /v1/messages (its key: LLMC_ANTHROPIC_KEY or "    \
      "ANTHROPIC_API_KEY), or 'mock' for the built-in mock; 'auto': the mock when --upstream " \
      "is mock, else https://api.anthropic.com/v1.")                                          \
    X(ask_model, "ask-model", STR, "gpt-4o-mini", 0, 0, NULL,                                 \
      "Model that GET /ask asks when the request names none.")                                \
    X(connect_timeout, "connect-timeout", SECS, "10", 1, 3600000, NULL,                       \
      "Time allowed to connect to the upstream (seconds).")                                   \
    X(upstream_timeout, "upstream-timeout", SECS, "120", 1, 86400000, NULL,                   \
      "Time allowed for a whole upstream call (seconds); then 504.")                          \
    X(upstream_max_connections, "upstream-max-connections", INT, "0", 0, 1000000, NULL,       \
      "Upstream connections open at once, all threads together; calls past it wait for one "  \
      "(0: what the open-file limit leaves after --max-connections).")                        \
    X(upstream_retries, "upstream-retries", INT, "0", 0, 10, NULL,                            \
      "Retries of an upstream call that failed to connect or was refused with 429/503 "       \
      "(Retry-After honoured), within --upstream-timeout.")                                   \
    X(retry_unsafe, "retry-unsafe", BOOL, "off", 0, 0, NULL,                                  \
      "Also retry failures after which the model may have seen the request (a reset, "        \
      "500/502/504), as long as nothing was relayed to the client yet.")                      \
    X(ttl, "ttl", SECS, "300", 1000, 31536000000LL, NULL,                                     \
      "How long a cached answer stays fresh (seconds); X-Cache-TTL overrides per request.")   \
    X(max_ttl, "max-ttl", SECS, "86400", 1000, 31536000000LL, NULL,                           \
      "Upper bound for a per-request TTL (seconds).")                                         \
    X(cache_scope, "cache-scope", ENUM, "auto", 0, 0, LLMC_CFG_CACHE_SCOPE_WORDS,             \
      "Who shares cached answers: 'shared' by all clients, 'per-key' per Authorization "      \
      "credential; 'auto' is shared when the gateway holds the upstream key, else per-key.")  \
    X(forward_header, "forward-header", LIST, "", 0, 0, NULL,                                 \
      "A client header to pass upstream, repeatable; it then joins the cache key. Without "   \
      "the gateway's upstream key OpenAI-Organization, OpenAI-Project and OpenAI-Beta go "    \
      "too; with it, only the names listed here.")                                            \
    X(max_memory, "max-memory", SIZE, "256M", 65536, 1099511627776LL, NULL,                   \
      "Bytes the in-memory cache may hold, entries and their metadata measured.")            \
    X(max_entry_percent, "max-entry-percent", INT, "10", 1, 100, NULL,                        \
      "An answer bigger than this share of --max-memory is served but not stored.")           \
    X(stale_if_error, "stale-if-error", SECS, "0", 0, 31536000000LL, NULL,                    \
      "Serve an expired answer up to this long past expiry when the upstream fails (0: off).")\
    X(max_stale, "max-stale", SECS, "3600", 0, 31536000000LL, NULL,                           \
      "How long past expiry answers are kept for clients' Cache-Control: max-stale.")         \
    X(max_header_bytes, "max-header-bytes", SIZE, "16K", 1024, 1048576, NULL,                 \
      "Largest request line plus headers, and chunk extensions plus trailers; larger: 431 "  \
      "(414 when the request line alone is).")                                                \
    X(max_headers, "max-headers", INT, "100", 8, 10000, NULL,                                 \
      "Most request headers; more gets 431.")                                                 \
    X(max_body_bytes, "max-body-bytes", SIZE, "4M", 1024, 1073741824LL, NULL,                 \
      "Largest request body; larger gets 413.")                                               \
    X(max_json_values, "max-json-values", INT, "200000", 16, 100000000, NULL,                 \
      "Most JSON values (objects, arrays, strings, numbers, literals) a request body may "    \
      "hold; more gets 413, counted before the body is parsed.")                              \
    X(parse_offload_bytes, "parse-offload-bytes", SIZE, "4K", 0, 1073741824LL, NULL,          \
      "Request bodies larger than this are parsed on the thread pool, off the event loop "   \
      "(0: every body).")                                                                     \
    X(max_body_memory, "max-body-memory", SIZE, "256M", 0, 1099511627776LL, NULL,             \
      "Bytes all request bodies being received or handled may hold together; a body that "   \
      "would pass it gets 503 with Retry-After (0: no bound).")                               \
    X(max_response_bytes, "max-response-bytes", SIZE, "256M", 65536, 17179869184LL, NULL,     \
      "Largest upstream answer held while it is fetched; a larger one is cut off, not "      \
      "stored, and answered 502.")                                                            \
    X(header_timeout, "header-timeout", SECS, "10", 1, 3600000, NULL,                         \
      "Time allowed to receive a request's head and body (seconds); then 408. A new "        \
      "connection must send its first request within it too.")                               \
    X(idle_timeout, "idle-timeout", SECS, "60", 1, 86400000, NULL,                            \
      "How long an idle keep-alive connection is kept open (seconds).")                       \
    X(max_connections, "max-connections", INT, "10000", 1, 1000000, NULL,                     \
      "Open client connections allowed in all (split across threads); more get 503.")         \
    X(access_log, "access-log", WORD_OR_STR, "-", 0, 0, LLMC_CFG_ACCESS_LOG_WORDS,            \
      "Where the JSON access log goes: '-' for stdout, 'off', or a file path.")               \
    X(access_log_buffer, "access-log-buffer", SIZE, "64K", 0, 16777216, NULL,                 \
      "Access-log bytes each thread buffers before writing them out (whole lines only; 0 "   \
      "writes every line at once).")                                                          \
    X(access_log_flush, "access-log-flush", SECS, "0.2", 1, 60000, NULL,                      \
      "Longest time a buffered access-log line waits before it is written (seconds).")        \
    X(complete_abandoned, "complete-abandoned", BOOL, "on", 0, 0, NULL,                       \
      "When every client of an upstream call has left, finish the call anyway so the answer " \
      "is cached (off: cancel it).")                                                          \
    X(compress, "compress", BOOL, "on", 0, 0, NULL,                                           \
      "Send answers gzip-, br- or zstd-compressed (streams too) to clients whose Accept-Encoding " \
      "takes it; each compressed form is built once and kept beside its entry.")              \
    X(compress_min, "compress-min", SIZE, "1K", 0, 1073741824LL, NULL,                        \
      "Smallest answer body sent compressed; smaller ones go as they are.")                   \
    X(compress_offload_bytes, "compress-offload-bytes", SIZE, "64K", 0, 1073741824LL, NULL,   \
      "Answer bodies at least this big get their compressed form built on the thread pool, "  \
      "the requests that need it waiting while the loop serves others (0: every body).")      \
    X(compress_at_rest, "compress-at-rest", BOOL, "on", 0, 0, NULL,                           \
      "Store answers zstd-compressed in the memory and disk tiers, with a dictionary trained " \
      "from the cache's own answers (README: Compression at rest).")                         \
    X(compress_at_rest_min, "compress-at-rest-min", SIZE, "256", 0, 1073741824LL, NULL,       \
      "Smallest answer body stored compressed at rest; smaller ones are stored as they are.") \
    X(compress_dict_samples, "compress-dict-samples", INT, "1000", 0, 100000000, NULL,       \
      "Answers sampled before the first at-rest dictionary is trained (0: never train, "     \
      "plain zstd).")                                                                           \
    X(compress_dict_retrain, "compress-dict-retrain", INT, "50000", 0, 1000000000, NULL,     \
      "New answers sampled before the dictionary is trained again (0: train once).")          \
    X(compress_dict_gc, "compress-dict-gc", SECS, "60", 0, 86400000, NULL,                   \
      "How often the disk tier checks which at-rest dictionaries its records still use: one " \
      "that is not the newest, that no record uses and no memory entry holds is deleted "     \
      "with its file (zdict-<id>). 0: never (old ones are kept; training stops at 64).")     \
    X(memory_hot_percent, "memory-hot-percent", INT, "10", 0, 90, NULL,                       \
      "Share of --max-memory (percent) kept for decompressed copies of popular answers, "   \
      "when --compress-at-rest is on: their hits need no decompression (0: none).")          \
    X(memory_compress_max, "memory-compress-max", SIZE, "256K", 0, 1073741824LL, NULL,        \
      "Largest answer body the memory tier stores compressed; bigger ones are kept as they "  \
      "came, so that no store or hit (de)compresses more than this on an event loop (0: no "  \
      "bound).")                                                                              \
    X(replay_pace_ms, "replay-pace-ms", INT, "0", 0, 10000, NULL,                             \
      "Delay between the events of a stream replayed from the cache, in milliseconds "        \
      "(0: send it at once).")                                                                \
    X(prices, "prices", STR, "", 0, 0, NULL,                                                   \
      "Price file for the money a cache hit saves: lines 'model input_per_1M output_per_1M' " \
      "(README: Tokens and money saved). Empty: the built-in table (dated; /stats shows "   \
      "its date); 'none': tokens are counted, money is not. Reread on SIGHUP.")           \
    X(metrics_max_models, "metrics-max-models", INT, "32", 1, 1000, NULL,                      \
      "How many distinct models /stats and /metrics count apart; later ones are counted " \
      "together under the model 'other'.")                                                    \
    X(stream_max_lag, "stream-max-lag", SIZE, "1M", 131072, 1073741824LL, NULL,               \
      "How far a client of a live stream may fall behind the upstream (bytes the kernel has " \
      "not taken); further behind, it is disconnected (stream_waiters_dropped).")            \
    X(metrics_max_namespaces, "metrics-max-namespaces", INT, "32", 1, 1000, NULL,              \
      "How many distinct cache namespaces /stats and /metrics count apart; later ones are "  \
      "counted together under the namespace 'other'.")                                        \
    X(data_dir, "data-dir", WORD_OR_STR, "none", 0, 0, LLMC_CFG_DATA_DIR_WORDS,               \
      "Directory of the on-disk (LMDB) cache tier; 'none' keeps the cache in memory only.")   \
    X(disk_sync, "disk-sync", ENUM, "periodic", 0, 0, LLMC_CFG_DISK_SYNC_WORDS,               \
      "Disk durability: 'full' syncs every commit, 'periodic' syncs every --disk-sync-interval, "\
      "'none' leaves it to the OS.")                                                          \
    X(disk_sync_interval, "disk-sync-interval", SECS, "1", 10, 3600000, NULL,                 \
      "With --disk-sync periodic: how often committed writes are synced (seconds).")          \
    X(disk_max, "disk-max", SIZE, "1G", 1048576, 1099511627776LL, NULL,                       \
      "Largest size of the on-disk cache file; the oldest entries go first when full.")       \
    X(disk_on_corrupt, "disk-on-corrupt", ENUM, "quarantine", 0, 0,                           \
      LLMC_CFG_DISK_ON_CORRUPT_WORDS,                                                         \
      "A data file LMDB cannot open, or one open in the last two runs that ended without "    \
      "closing it (a crash loop): 'quarantine' moves it aside (data.mdb.corrupt-<time>) and " \
      "starts with an empty disk tier; 'fail' stops start-up instead.")                      \
    X(disk_queue, "disk-queue", INT, "65536", 16, 16777216, NULL,                             \
      "Writes waiting for the disk writer thread; past this, writes are dropped (counted).")  \
    X(redis, "redis", WORD_OR_STR, "none", 0, 0, LLMC_CFG_REDIS_WORDS,                          \
      "Shared cache tier on Redis, between memory and disk: "                                 \
      "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], a Redis Cluster's seeds as "              \
      "redis://[[USER]:PASSWORD@]HOST:PORT,HOST:PORT[,...], or 'none'. Several gateways on "  \
      "one Redis share their answers, purges and refreshes. No rediss:// (TLS): Debian 12's " \
      "hiredis has none. Set it in LLMC_REDIS to keep a password off the command line.")      \
    X(redis_prefix, "redis-prefix", STR, "llmc:", 0, 0, NULL,                                 \
      "Put before every key the gateway writes to Redis: one per deployment sharing a Redis.") \
    X(redis_timeout, "redis-timeout", SECS, "50ms", 1, 60000, NULL,                           \
      "A Redis lookup not answered within this is a miss (seconds); a Redis that keeps "      \
      "timing out is disconnected and retried with backoff.")                                 \
    X(redis_semantic_maxlen, "redis-semantic-maxlen", INT, "100000", 0, 100000000, NULL,      \
      "With --redis and --semantic: the questions shared with the other gateways (a Redis "   \
      "stream, <prefix>semantic) are kept to about this many; 0 shares none.")                \
    X(redis_semantic_poll_ms, "redis-semantic-poll-ms", INT, "200", 10, 60000, NULL,          \
      "With --redis and --semantic: how often the other gateways' questions are read.")      \
    X(semantic, "semantic", ENUM, "off", 0, 0, LLMC_CFG_SEMANTIC_WORDS,                       \
      "Semantic tier, asked after the exact tiers miss: 'on' answers a chat question with "   \
      "the answer to a near-duplicate one (same model, parameters, system prompt and earlier " \
      "turns; guarded against different numbers, names, negations...), 'off' never does; "   \
      "'shadow' decides as 'on' would and logs it (stderr, one JSON line each), but serves "  \
      "the model's answer: to measure precision on real traffic before turning it on.")      \
    X(semantic_threshold, "semantic-threshold", RATIO, "0.7", 1, 1000, NULL,                 \
      "How similar (cosine of the lexical vectors, 0.001..1, or a percentage) a question must " \
      "be before the guards judge it; X-Cache-Semantic-Threshold sets it per request.")       \
    X(semantic_search_ef, "semantic-search-ef", INT, "32", 4, 4096, NULL,                     \
      "Beam width of the semantic index's graph search (a partition past 1,000 questions): "  \
      "wider finds more of the questions above the threshold, at more cost per lookup.")     \
    X(semantic_search_narrow, "semantic-search-narrow", INT, "8", 0, 4096, NULL,              \
      "The graph search walks at this narrower width first and widens to "                   \
      "--semantic-search-ef only when it finds a question within --semantic-search-margin "   \
      "of the threshold: most new questions are near nothing, and cost a narrow walk (0: "    \
      "always the full width).")                                                             \
    X(semantic_search_margin, "semantic-search-margin", RATIO, "0.15", 0, 1000, NULL,         \
      "How far under the threshold the narrow walk's best find must come for the search to " \
      "widen (its scores are int8 estimates, and a near find may lead to a closer one).")    \
    X(semantic_search_int8, "semantic-search-int8", BOOL, "on", 0, 0, NULL,                   \
      "The graph search walks by int8 codes of the vectors (then scores its finds by float): " \
      "about twice as fast, for a quarter more memory per question (the codes beside the "    \
      "floats); off walks by the floats alone.")                                             \
    X(semantic_max_error, "semantic-max-error", RATIO, "0", 0, 1000, NULL,                    \
      "Error budget of semantic hits (a fraction, 0.01 or 1%; 0: off): each cached answer "   \
      "learns its own similarity threshold from verified outcomes, starting at "              \
      "--semantic-verify-start; a namespace whose measured wrong-hit rate is surely over it " \
      "falls back to exact-only until it is surely under.")                                    \
    X(semantic_verify, "semantic-verify", RATIO, "0", 0, 1000, NULL,                          \
      "Fraction of semantic hits also sent to the model in the background, after the client " \
      "got the cached answer, to judge whether it was right (--semantic-judge).")             \
    X(semantic_verify_per_minute, "semantic-verify-per-minute", INT, "60", 0, 1000000, NULL,  \
      "The most background verification calls in any minute (all namespaces); 0: none.")      \
    X(semantic_judge, "semantic-judge", ENUM, "embed", 0, 0, LLMC_CFG_SEMANTIC_JUDGE_WORDS,   \
      "How a verified hit's answer is compared with the model's: 'embed' (the two answers' "  \
      "lexical vectors' cosine at least --semantic-judge-bound), 'exact' (the texts equal, "  \
      "for classification-like answers) or 'model' (a fixed equivalence prompt to "          \
      "--semantic-judge-model at the upstream, with the gateway's key; a call each, counted " \
      "against --semantic-verify-per-minute).")                                               \
    X(semantic_judge_model, "semantic-judge-model", STR, "gpt-4o-mini", 0, 0, NULL,           \
      "With --semantic-judge model: the chat model asked whether two answers say the same.")  \
    X(semantic_judge_bound, "semantic-judge-bound", RATIO, "0.8", 1, 1000, NULL,              \
      "With --semantic-judge embed: the cosine two answers need to count as the same.")        \
    X(semantic_verify_start, "semantic-verify-start", RATIO, "0.9", 1, 1000, NULL,            \
      "With --semantic-max-error: the similarity a cached answer needs before any outcome "   \
      "of it is verified (its threshold then comes down to the lowest verified right).")     \
    X(semantic_verify_band, "semantic-verify-band", RATIO, "0.1", 0, 1000, NULL,              \
      "With --semantic-max-error: the uncertain band under an answer's threshold: a "         \
      "candidate there is not served, and the model's answer to the miss is compared with it " \
      "to teach the threshold.")                                                              \
    X(semantic_embedder, "semantic-embedder", ENUM, "lexical", 0, 0,                          \
      LLMC_CFG_SEMANTIC_EMBEDDER_WORDS,                                                       \
      "How questions become vectors: 'lexical' (built in, no network) or 'openai' (an "      \
      "OpenAI-compatible /v1/embeddings at --embed-url, key in LLMC_EMBED_KEY).")             \
    X(embed_url, "embed-url", STR, "", 0, 0, NULL,                                            \
      "With --semantic-embedder openai: the embeddings API's base URL (http://host/v1; "     \
      "/embeddings is appended).")                                                            \
    X(embed_model, "embed-model", STR, "text-embedding-3-small", 0, 0, NULL,                  \
      "With --semantic-embedder openai: the embedding model asked for.")                      \
    X(semantic_timeout_ms, "semantic-timeout-ms", INT, "250", 1, 60000, NULL,                 \
      "With --semantic-embedder openai: a lookup whose embedding has not come within this "  \
      "many milliseconds is a miss (counted).")                                               \
    X(semantic_batch_ms, "semantic-batch-ms", INT, "2", 0, 1000, NULL,                        \
      "With --semantic-embedder openai: how long a lookup's embedding waits for others to "  \
      "go in the same call (milliseconds; 0: the current loop turn's).")                      \
    X(mock_latency, "mock-latency", SECS, "2", 0, 3600000, NULL,                              \
      "With --upstream mock: the built-in mock model's delay before answering (seconds).")    \
    X(drain_timeout, "drain-timeout", SECS, "30", 0, 3600000, NULL,                           \
      "On SIGTERM, how long requests and streams in progress may take to finish while no new " \
      "ones are taken (seconds); then the rest are cut off. 0: stop at once.")                \
    X(client_keys, "client-keys", STR, "", 0, 0, NULL,                                        \
      "File of the client keys that may use the gateway, one a line with its rights (README: " \
      "Client keys); requests without a listed key get 401. Reread on SIGHUP. Empty: open.")  \
    X(admin_token, "admin-token", STR, "", 0, 0, NULL,                                        \
      "Bearer token the admin routes (/admin/...) require; empty: they are not served (404). " \
      "When set, /stats and /metrics require it too. Prefer the environment variable to the " \
      "flag, which other users can read in the process list.")                                \
    X(admin_listen, "admin-listen", WORD_OR_STR, "off", 0, 0, LLMC_CFG_ADMIN_LISTEN_WORDS,    \
      "A listener of its own for the admin routes, /stats and /metrics, HOST:PORT; they then " \
      "leave --listen. 'off': they are served on --listen.")

/*
 * The word lists: W(ENUMERATOR, "word") for each word, in the enum's order;
 * a WORD_OR_STR list ends with T(ENUMERATOR, text_field), the value of any
 * other string, which is kept in cfg->text_field (NULL while a word is set).
 */
#define LLMC_CFG_UPSTREAM_WORDS(W, T)                                                         \
    W(LLMC_CFG_UPSTREAM_MOCK, "mock")           /* the built-in mock model */                 \
    T(LLMC_CFG_UPSTREAM_URL, upstream_url)
#define LLMC_CFG_ANTHROPIC_UPSTREAM_WORDS(W, T)                                               \
    W(LLMC_CFG_ANTHROPIC_UPSTREAM_AUTO, "auto") /* the mock with --upstream mock, else Anthropic's */ \
    W(LLMC_CFG_ANTHROPIC_UPSTREAM_MOCK, "mock") /* the built-in mock model */                 \
    T(LLMC_CFG_ANTHROPIC_UPSTREAM_URL, anthropic_upstream_url)
#define LLMC_CFG_CACHE_SCOPE_WORDS(W, T)                                                      \
    W(LLMC_CFG_CACHE_SCOPE_AUTO, "auto")                                                      \
    W(LLMC_CFG_CACHE_SCOPE_SHARED, "shared")                                                  \
    W(LLMC_CFG_CACHE_SCOPE_PER_KEY, "per-key")
#define LLMC_CFG_ACCESS_LOG_WORDS(W, T)                                                       \
    W(LLMC_CFG_ACCESS_LOG_OFF, "off")                                                         \
    W(LLMC_CFG_ACCESS_LOG_STDOUT, "-")                                                        \
    T(LLMC_CFG_ACCESS_LOG_FILE, access_log_path)
#define LLMC_CFG_DATA_DIR_WORDS(W, T)                                                         \
    W(LLMC_CFG_DATA_DIR_NONE, "none")           /* memory only, no disk tier */               \
    T(LLMC_CFG_DATA_DIR_PATH, data_dir_path)
#define LLMC_CFG_ADMIN_LISTEN_WORDS(W, T)                                                      \
    W(LLMC_CFG_ADMIN_LISTEN_OFF, "off")         /* admin routes on --listen */                \
    T(LLMC_CFG_ADMIN_LISTEN_ADDR, admin_listen_addr)
#define LLMC_CFG_REDIS_WORDS(W, T)                                                            \
    W(LLMC_CFG_REDIS_NONE, "none")              /* no Redis tier */                           \
    T(LLMC_CFG_REDIS_URL, redis_url)
#define LLMC_CFG_DISK_ON_CORRUPT_WORDS(W, T)                                                   \
    W(LLMC_CFG_DISK_ON_CORRUPT_QUARANTINE, "quarantine")                                      \
    W(LLMC_CFG_DISK_ON_CORRUPT_FAIL, "fail")
#define LLMC_CFG_SEMANTIC_WORDS(W, T)                                                         \
    W(LLMC_CFG_SEMANTIC_OFF, "off")                                                           \
    W(LLMC_CFG_SEMANTIC_ON, "on")                                                             \
    W(LLMC_CFG_SEMANTIC_SHADOW, "shadow")       /* decide, log, but serve the model's answer */
#define LLMC_CFG_SEMANTIC_JUDGE_WORDS(W, T)                                                   \
    W(LLMC_CFG_SEMANTIC_JUDGE_EMBED, "embed")                                                 \
    W(LLMC_CFG_SEMANTIC_JUDGE_EXACT, "exact")                                                 \
    W(LLMC_CFG_SEMANTIC_JUDGE_MODEL, "model")
#define LLMC_CFG_SEMANTIC_EMBEDDER_WORDS(W, T)                                                \
    W(LLMC_CFG_SEMANTIC_EMBEDDER_LEXICAL, "lexical")                                          \
    W(LLMC_CFG_SEMANTIC_EMBEDDER_OPENAI, "openai")
#define LLMC_CFG_DISK_SYNC_WORDS(W, T)                                                        \
    W(LLMC_CFG_DISK_SYNC_FULL, "full")                                                        \
    W(LLMC_CFG_DISK_SYNC_PERIODIC, "periodic")                                                \
    W(LLMC_CFG_DISK_SYNC_NONE, "none")

/* Helpers for the word lists: nothing, an enumerator, a text field. */
#define LLMC_CFG_NONE(...)
#define LLMC_CFG_ENUMERATOR(id, ...) id,
#define LLMC_CFG_TEXT_FIELD(id, field) char *field;

/* typedef enum { ... } llmc_cfg_<field>_t; for each option with words. The
   enumerators count from 0 in list order: the parser stores a word's
   position in its list, as an int. */
#define LLMC_CFG_ENUM_STR(f, words)
#define LLMC_CFG_ENUM_INT(f, words)
#define LLMC_CFG_ENUM_BOOL(f, words)
#define LLMC_CFG_ENUM_SIZE(f, words)
#define LLMC_CFG_ENUM_SECS(f, words)
#define LLMC_CFG_ENUM_RATIO(f, words)
#define LLMC_CFG_ENUM_LIST(f, words)
#define LLMC_CFG_ENUM_ENUM(f, words)                                                    \
    typedef enum { words(LLMC_CFG_ENUMERATOR, LLMC_CFG_ENUMERATOR) } llmc_cfg_##f##_t;  \
    _Static_assert(sizeof(llmc_cfg_##f##_t) == sizeof(int), "the parser stores an int");
#define LLMC_CFG_ENUM_WORD_OR_STR(f, words) LLMC_CFG_ENUM_ENUM(f, words)
#define LLMC_CFG_ENUM(f, name, type, def, min, max, words, desc) LLMC_CFG_ENUM_##type(f, words)
LLMC_CONFIG_TABLE(LLMC_CFG_ENUM)
#undef LLMC_CFG_ENUM

typedef struct llmc_config {
#define LLMC_CFG_FIELD_STR(f, words)  char *f;
#define LLMC_CFG_FIELD_ENUM(f, words) llmc_cfg_##f##_t f;
#define LLMC_CFG_FIELD_WORD_OR_STR(f, words) \
    llmc_cfg_##f##_t f;                      \
    words(LLMC_CFG_NONE, LLMC_CFG_TEXT_FIELD)
#define LLMC_CFG_FIELD_INT(f, words)  int64_t f;
#define LLMC_CFG_FIELD_BOOL(f, words) bool f;
#define LLMC_CFG_FIELD_SIZE(f, words) int64_t f;
#define LLMC_CFG_FIELD_SECS(f, words) int64_t f;   /* milliseconds */
#define LLMC_CFG_FIELD_RATIO(f, words) int64_t f;  /* thousandths */
#define LLMC_CFG_FIELD_LIST(f, words) char *f;     /* "a,b,c"; "" when empty */
#define LLMC_CFG_FIELD(f, name, type, def, min, max, words, desc) LLMC_CFG_FIELD_##type(f, words)
    LLMC_CONFIG_TABLE(LLMC_CFG_FIELD)
#undef LLMC_CFG_FIELD
    char *config_file;   /* --config FILE, when given */
} llmc_config_t;

/*
 * Fills cfg from defaults, then --config FILE (if among the flags), then the
 * environment (envp, NULL-terminated "NAME=value" strings; may be NULL),
 * then the flags argv[0..argc). Returns 0; LLMC_EINVAL with a message naming
 * the option in err for an unknown option, a missing value or a bad value.
 * Sets *help when --help was given, *help_md for --help-markdown.
 * On error cfg still holds only owned memory: call llmc_config_free.
 */
int llmc_config_load(llmc_config_t *cfg, int argc, char **argv, char **envp,
                     bool *help, bool *help_md, char *err, size_t errlen);

/* Sets one option by name from its text form. 0 or LLMC_EINVAL (message in err). */
int llmc_config_set(llmc_config_t *cfg, const char *name, const char *value, char *err, size_t errlen);

/* Calls changed(name, arg) for each option whose value differs between a
   and b (a SIGHUP's reread against the options running), in table order. */
void llmc_config_diff(const llmc_config_t *a, const llmc_config_t *b,
                      void (*changed)(const char *name, void *arg), void *arg);

/* Frees the strings cfg owns (STR fields and the text of WORD_OR_STR ones). */
void llmc_config_free(llmc_config_t *cfg);

/* Writes --help text (usage line for prog, then every option with type,
   default and description). */
void llmc_config_help(FILE *out, const char *prog);

/* Writes the option reference as Markdown (docs/CONFIG.md). */
void llmc_config_markdown(FILE *out);

/* Parses a SIZE or SECS text the way the table does (exported for the mock's
   own flags and for tests). 0 or LLMC_EINVAL. */
int llmc_config_parse_size(const char *s, int64_t *out);
int llmc_config_parse_secs(const char *s, int64_t *out_ms);

/* Walks a LIST option's value: the next comma-separated item after *cursor
   with the spaces and tabs around it trimmed, empty items skipped. true
   with *item and *len set and *cursor moved past it; false at the end. Start
   with *cursor = the value (NULL is an empty list). */
bool llmc_config_list_next(const char **cursor, const char **item, size_t *len);

#endif
