/*
 * gateway/gateway.c: the state all worker threads share, built from the
 * options: the tier set, the flight table, the upstream base URL and key,
 * the listen addresses, the admin token and the access log; and the one
 * clock the cache sees.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/resource.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "gateway/bymodel.h"
#include "gateway/clients.h"
#include "gateway/gw_int.h"
#include "llmc/cache.h"
#include "llmc/error.h"
#include "llmc/fpmap.h"
#include "llmc/zdict.h"
#include "tier/disk.h"
#include "tier/memory.h"
#include "tier/redis.h"
#include "semantic/verify.h"
#include "tier/redis_vec.h"
#include "tier/semantic.h"

/* Splits "HOST:PORT" or "[V6]:PORT" (the value of option opt) into host
   (hcap bytes) and *port. */
static int parse_addr(const char *opt, const char *s, char *host_out, size_t hcap, int *port_out,
                      char *err, size_t errlen)
{
    const char *colon = strrchr(s, ':');
    const char *host = s;
    size_t hlen = colon ? (size_t)(colon - s) : 0;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':')
            colon = NULL;
        host = s + 1;
        hlen = close ? (size_t)(close - host) : 0;
    }
    char *end = NULL;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || hlen == 0 || hlen >= hcap || !end || *end || end == colon + 1 ||
        port < 0 || port > 65535) {
        snprintf(err, errlen, "--%s: '%s' is not HOST:PORT", opt, s);
        return LLMC_EINVAL;
    }
    memcpy(host_out, host, hlen);
    host_out[hlen] = '\0';
    *port_out = (int)port;
    return 0;
}

static int parse_listen(llmc_gw_t *gw, const llmc_config_t *cfg, char *err, size_t errlen)
{
    int rc = parse_addr("listen", cfg->listen, gw->listen_host, sizeof(gw->listen_host),
                        &gw->listen_port, err, errlen);
    if (rc < 0 || cfg->admin_listen == LLMC_CFG_ADMIN_LISTEN_OFF)
        return rc;
    gw->admin_listen = true;
    return parse_addr("admin-listen", cfg->admin_listen_addr, gw->admin_host,
                      sizeof(gw->admin_host), &gw->admin_port, err, errlen);
}

static void sha256(const void *p, size_t n, uint8_t out[32])
{
    unsigned int len = 0;
    if (!EVP_Digest(p, n, out, &len, EVP_sha256(), NULL))
        memset(out, 0, 32); /* cannot happen with the default provider */
}

/* The token is kept only as its hash: two hashes of equal length compare in
   constant time, where the token and a credential of another length would
   not (CRYPTO_memcmp needs equal lengths, and a length check leaks one). */
static void admin_token_init(llmc_gw_t *gw, const llmc_config_t *cfg)
{
    const char *t = cfg->admin_token;
    pthread_mutex_init(&gw->admin_mu, NULL);
    gw->admin_token_set = t && *t;
    if (gw->admin_token_set)
        sha256(t, strlen(t), gw->admin_token_hash);
}

bool llmc_gw_admin_authorized(const llmc_gw_t *gw, const llmc_http_req_t *req)
{
    const char *v = llmc_http_header(req, "authorization");
    if (!gw->admin_token_set || !v || strncasecmp(v, "bearer", 6) != 0 ||
        (v[6] != ' ' && v[6] != '\t'))
        return false;
    v += 6;
    while (*v == ' ' || *v == '\t')
        v++;
    uint8_t h[32];
    sha256(v, strlen(v), h);
    pthread_mutex_lock((pthread_mutex_t *)&gw->admin_mu);
    bool ok = gw->admin_token_set && CRYPTO_memcmp(h, gw->admin_token_hash, sizeof(h)) == 0;
    pthread_mutex_unlock((pthread_mutex_t *)&gw->admin_mu);
    return ok;
}

/* The price table --prices names: empty for the built-in one, "none" for
   none (*out NULL: tokens are counted, money is not), else a file. */
static int gw_prices_load(const char *opt, llmc_prices_t **out, char *err, size_t errlen)
{
    char perr[512];
    int rc;
    *out = NULL;
    if (opt && strcmp(opt, "none") == 0)
        return 0;
    if (opt && *opt)
        rc = llmc_prices_load(opt, out, perr, sizeof(perr));
    else
        rc = llmc_prices_builtin(out, perr, sizeof(perr));
    if (rc < 0)
        snprintf(err, errlen, "--prices: %s", perr);
    return rc;
}

/* ---- SIGHUP: the options read again ---------------------------------------- */

typedef struct reload_out {
    char *buf;
    size_t cap, len;
} reload_out_t;

static void out_line(reload_out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_line(reload_out_t *o, const char *fmt, ...)
{
    va_list ap;
    if (o->len + 1 >= o->cap)
        return;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        o->len = o->len + (size_t)n < o->cap ? o->len + (size_t)n : o->cap - 1;
}

/* The options a SIGHUP applies to gw->live: where each is in the options
   and in gw->live. */
typedef struct live_opt {
    const char *name;
    size_t cfg_off, live_off;
} live_opt_t;

#define LIVE(field, opt) {opt, offsetof(llmc_config_t, field), offsetof(llmc_gw_live_t, field)}
static const live_opt_t live_opts[] = {
    LIVE(ttl, "ttl"),
    LIVE(max_ttl, "max-ttl"),
    LIVE(stale_if_error, "stale-if-error"),
    LIVE(replay_pace_ms, "replay-pace-ms"),
    LIVE(semantic_threshold, "semantic-threshold"),
};
#undef LIVE

static void live_init(llmc_gw_t *gw, const llmc_config_t *cfg)
{
    for (size_t i = 0; i < sizeof(live_opts) / sizeof(live_opts[0]); i++)
        atomic_init((_Atomic int64_t *)((char *)&gw->live + live_opts[i].live_off),
                    *(const int64_t *)((const char *)cfg + live_opts[i].cfg_off));
}

typedef struct reload_ctx {
    llmc_gw_t *gw;
    const llmc_config_t *nc;
    reload_out_t *o;
} reload_ctx_t;

static int64_t keep_stale_ms(const llmc_config_t *cfg);

static bool is_live(const char *name)
{
    for (size_t i = 0; i < sizeof(live_opts) / sizeof(live_opts[0]); i++)
        if (strcmp(live_opts[i].name, name) == 0)
            return true;
    return false;
}

/* Each live option stored for the requests that start from now on, and
   named when it differs from the running value (which is compared, not
   the start's: an option set back to its start value changes too).
   stale-if-error cannot outgrow what the tiers were told at start to keep
   past expiry. */
static void live_apply(reload_ctx_t *c)
{
    for (size_t i = 0; i < sizeof(live_opts) / sizeof(live_opts[0]); i++) {
        const live_opt_t *l = &live_opts[i];
        const char *name = l->name;
        _Atomic int64_t *v = (_Atomic int64_t *)((char *)&c->gw->live + l->live_off);
        int64_t nv = *(const int64_t *)((const char *)c->nc + l->cfg_off);
        if (strcmp(name, "stale-if-error") == 0 && nv > keep_stale_ms(c->gw->cfg)) {
            out_line(c->o, "llmcached: SIGHUP: --stale-if-error above what the cache keeps past "
                     "expiry (%lld ms, set at start by --max-stale and --stale-if-error) needs a "
                     "restart\n", (long long)keep_stale_ms(c->gw->cfg));
            continue;
        }
        int64_t old = atomic_exchange(v, nv);
        if (old != nv)
            out_line(c->o, "llmcached: SIGHUP: --%s changed from %lld to %lld%s\n", name,
                     (long long)old, (long long)nv,
                     strcmp(name, "replay-pace-ms") == 0 ? "" :
                     strcmp(name, "semantic-threshold") == 0 ? " (per mille)" : " ms");
    }
}

/* An option that differs between the start's options and the file: the
   live ones (live_apply), the admin token and the prices are applied by
   the caller; the others wait for a restart. */
static void option_changed(const char *name, void *arg)
{
    reload_ctx_t *c = arg;
    if (strcmp(name, "admin-token") == 0 || strcmp(name, "prices") == 0 || is_live(name))
        return;
    out_line(c->o, "llmcached: SIGHUP: --%s differs from the running value: it needs a "
             "restart\n", name);
}

static int gw_prices_load(const char *opt, llmc_prices_t **out, char *err, size_t errlen);

/* --prices: the table read again (a file's may have changed even when the
   option did not); a table that cannot be read keeps the one in use. */
static void prices_apply(llmc_gw_t *gw, const char *opt, reload_out_t *o)
{
    const char *now = gw->prices_opt ? gw->prices_opt : "";
    opt = opt ? opt : "";
    bool file = *opt && strcmp(opt, "none") != 0;
    if (!file && strcmp(now, opt) == 0)
        return; /* the built-in table or none, as before */
    char err[600];
    llmc_prices_t *p = NULL;
    char *keep = strdup(opt);
    if (!keep || gw_prices_load(opt, &p, err, sizeof(err)) < 0) {
        out_line(o, "llmcached: SIGHUP: cannot reload %s; the prices in use stay\n",
                 keep ? err : "--prices: out of memory");
        free(keep);
        return;
    }
    size_t n = p ? p->n : 0;
    char as_of[11] = "";
    if (p)
        memcpy(as_of, p->as_of, sizeof(as_of));
    if (llmc_bymodel_set_prices(gw->bymodel, p) < 0) {
        out_line(o, "llmcached: SIGHUP: cannot reload --prices: out of memory\n");
        free(keep);
        return;
    }
    free(gw->prices_opt);
    gw->prices_opt = keep;
    out_line(o, "llmcached: SIGHUP: prices %s: %zu rows%s%s\n",
             !*opt ? "built-in" : file ? opt : "none", n, as_of[0] ? ", as of " : "", as_of);
}

/* The new admin token, as its hash; an empty one turns the admin routes
   off (404), as at start. */
static void admin_token_apply(llmc_gw_t *gw, const char *t, reload_out_t *o)
{
    uint8_t h[32] = {0};
    bool set = t && *t;
    if (set)
        sha256(t, strlen(t), h);
    pthread_mutex_lock(&gw->admin_mu);
    bool same = set == gw->admin_token_set &&
                (!set || CRYPTO_memcmp(h, gw->admin_token_hash, sizeof(h)) == 0);
    memcpy(gw->admin_token_hash, h, sizeof(h));
    gw->admin_token_set = set;
    pthread_mutex_unlock(&gw->admin_mu);
    if (!same)
        out_line(o, "llmcached: SIGHUP: --admin-token %s\n",
                 set ? "replaced" : "removed: admin routes off");
}

void llmc_gw_reload_options(llmc_gw_t *gw, char *out, size_t outlen)
{
    reload_out_t o = {out, outlen, strlen(out)};
    llmc_config_t nc;
    bool help = false, help_md = false;
    char err[512] = "";
    if (!gw->argv)
        return;
    if (llmc_config_load(&nc, gw->argc, gw->argv, gw->envp, &help, &help_md, err,
                         sizeof(err)) < 0) {
        out_line(&o, "llmcached: SIGHUP: the options cannot be read again (%s): none changed\n",
                 err);
    } else {
        reload_ctx_t c = {gw, &nc, &o};
        llmc_config_diff(gw->cfg, &nc, option_changed, &c);
        live_apply(&c);
        admin_token_apply(gw, nc.admin_token, &o);
        prices_apply(gw, nc.prices, &o);
    }
    llmc_config_free(&nc);
}

/* --client-keys: the file is read once here (a bad one stops the start,
   with its line number) and again on each SIGHUP. */
static int clients_init(llmc_gw_t *gw, const llmc_config_t *cfg, char *err, size_t errlen)
{
    char lerr[400] = "";
    pthread_mutex_init(&gw->clients_mu, NULL);
    gw->client_keys = cfg->client_keys && *cfg->client_keys;
    if (!gw->client_keys)
        return 0;
    int rc = llmc_clients_load(cfg->client_keys, &gw->clients, lerr, sizeof(lerr));
    if (rc < 0)
        snprintf(err, errlen, "--client-keys: %s", lerr[0] ? lerr : llmc_strerror(rc));
    return rc;
}

int llmc_gw_clients_reload(llmc_gw_t *gw, char *msg, size_t msglen)
{
    char lerr[400] = "";
    llmc_clients_t *t = NULL;
    if (!gw->client_keys) {
        snprintf(msg, msglen, "no --client-keys file to reread");
        return LLMC_ENOENT;
    }
    int rc = llmc_clients_load(gw->cfg->client_keys, &t, lerr, sizeof(lerr));
    if (rc < 0) {
        snprintf(msg, msglen, "%s; the keys loaded before stay in use",
                 lerr[0] ? lerr : llmc_strerror(rc));
        return rc;
    }
    snprintf(msg, msglen, "%s: %zu client keys", gw->cfg->client_keys, llmc_clients_count(t));
    pthread_mutex_lock(&gw->clients_mu);
    llmc_clients_t *old = gw->clients;
    gw->clients = t;
    atomic_fetch_add(&gw->clients_gen, 1);
    pthread_mutex_unlock(&gw->clients_mu);
    llmc_clients_unref(old); /* workers still on it hold their own reference */
    return 0;
}

llmc_clients_t *llmc_gw_clients(llmc_worker_t *w)
{
    llmc_gw_t *gw = w->gw;
    if (!gw->client_keys)
        return NULL;
    /* One atomic load per request; the lock only after a reload (or on
       this worker's first request). */
    if (!w->clients || atomic_load(&gw->clients_gen) != w->clients_gen) {
        pthread_mutex_lock(&gw->clients_mu);
        llmc_clients_t *old = w->clients;
        w->clients = llmc_clients_ref(gw->clients);
        w->clients_gen = atomic_load(&gw->clients_gen);
        pthread_mutex_unlock(&gw->clients_mu);
        llmc_clients_unref(old);
    }
    return w->clients;
}

const llmc_client_t *llmc_gw_client_find(const llmc_clients_t *t, const llmc_http_req_t *req,
                                         const char **cred, size_t *len)
{
    *cred = llmc_clients_credential(llmc_http_header(req, "authorization"),
                                    llmc_http_header(req, "x-api-key"), len);
    return llmc_clients_find(t, *cred, *len);
}

static int open_log(llmc_gw_t *gw, const llmc_config_t *cfg, char *err, size_t errlen)
{
    const char *path = cfg->access_log_path;
    int rc = 0;
    if (cfg->access_log == LLMC_CFG_ACCESS_LOG_OFF)
        rc = llmc_log_open(&gw->log, NULL, -1);
    else if (cfg->access_log == LLMC_CFG_ACCESS_LOG_STDOUT)
        rc = llmc_log_open(&gw->log, NULL, STDOUT_FILENO);
    else if ((rc = llmc_log_open(&gw->log, path, -1)) == LLMC_EIO)
        snprintf(err, errlen, "--access-log: cannot open %s: %s", path, strerror(errno));
    return rc;
}

/* Another gateway's purge or new answer, heard through Redis. */
static void redis_peer_purge(void *arg, llmc_tier_t *from, unsigned worker,
                             const llmc_purge_t *sel, bool logged)
{
    llmc_gw_t *gw = arg;
    llmc_tier_set_purge_peer(gw->tiers, worker, sel, from, logged);
}

/* The shared tier, when --redis names one: between memory and disk, since
   a Redis hit costs a round trip on the network but saves the model call
   another gateway already paid for. */
static int open_redis(llmc_gw_t *gw, llmc_tier_t **out, char *err, size_t errlen)
{
    const llmc_config_t *cfg = gw->cfg;
    llmc_redis_config_t rc = {
        .url = cfg->redis_url,
        .prefix = cfg->redis_prefix,
        .timeout_ms = cfg->redis_timeout,
        .peer_purge = redis_peer_purge,
        .peer_purge_arg = gw,
    };
    llmc_tier_t *t = NULL;
    int rv;

    if (cfg->redis == LLMC_CFG_REDIS_NONE)
        return 0;
    if ((rv = llmc_tier_redis_open(&rc, &t, err, errlen)) < 0)
        return rv;
    *out = t;
    return llmc_tier_set_add(gw->tiers, t);
}

/* How long past expiry answers are kept, for max-stale and stale-if-error. */
static int64_t keep_stale_ms(const llmc_config_t *cfg)
{
    return cfg->max_stale > cfg->stale_if_error ? cfg->max_stale : cfg->stale_if_error;
}

static int open_disk(llmc_gw_t *gw, llmc_tier_t **out, char *err, size_t errlen)
{
    const llmc_config_t *cfg = gw->cfg;
    int rc;

    if (cfg->data_dir == LLMC_CFG_DATA_DIR_NONE)
        return 0;
    static const llmc_disk_sync_t sync_of[] = {
        [LLMC_CFG_DISK_SYNC_FULL] = LLMC_DISK_SYNC_FULL,
        [LLMC_CFG_DISK_SYNC_PERIODIC] = LLMC_DISK_SYNC_PERIODIC,
        [LLMC_CFG_DISK_SYNC_NONE] = LLMC_DISK_SYNC_NONE,
    };
    llmc_disk_config_t dc = {
        .path = cfg->data_dir_path,
        .sync = sync_of[cfg->disk_sync],
        .sync_interval_ms = cfg->disk_sync_interval,
        .max_bytes = (uint64_t)cfg->disk_max,
        .queue_len = (size_t)cfg->disk_queue,
        .keep_stale_ms = keep_stale_ms(cfg),
        .fail_on_corrupt = cfg->disk_on_corrupt == LLMC_CFG_DISK_ON_CORRUPT_FAIL,
        .dict_census_ms = cfg->compress_dict_gc,
    };
    char derr[400] = "";
    llmc_tier_t *disk = NULL;
    rc = llmc_tier_disk_open(&dc, &disk, derr, sizeof(derr));
    if (rc < 0) {
        snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir_path, derr);
        return rc;
    }
    *out = disk;
    /* Compression at rest: the dictionaries live beside the disk tier's
       file, which they are needed to read. */
    llmc_zdict_opts_t zo = {
        .on = cfg->compress_at_rest, .min_bytes = (size_t)cfg->compress_at_rest_min,
        .train_samples = (size_t)cfg->compress_dict_samples,
        .retrain_every = (size_t)cfg->compress_dict_retrain,
        .sample_held_only = true, /* the memory tier packs (and samples) them first */
    };
    if ((rc = llmc_zdict_init(&zo, cfg->data_dir_path, derr, sizeof(derr))) < 0) {
        disk->ops->destroy(disk);
        snprintf(err, errlen, "--data-dir %s: %s", cfg->data_dir_path, derr);
        return rc;
    }
    gw->zdict = true;
    return llmc_tier_set_add(gw->tiers, disk);
}

static int open_tiers(llmc_gw_t *gw, char *err, size_t errlen)
{
    const llmc_config_t *cfg = gw->cfg;
    llmc_cache_config_t cc = {
        .max_bytes = (size_t)cfg->max_memory,
        .nshards = 0,
        .max_entry_share = (double)cfg->max_entry_percent / 100.0,
        .keep_stale_ms = keep_stale_ms(cfg),
    };
    /* The hot set serves compressed entries' popular answers; without
       compression at rest it would hold nothing. */
    llmc_tier_t *mem = llmc_tier_memory_open(
        &cc, cfg->compress_at_rest ? (unsigned)cfg->memory_hot_percent : 0,
        (size_t)cfg->memory_compress_max);
    if (!(gw->tiers = llmc_tier_set_new()) || !mem || llmc_tier_set_add(gw->tiers, mem) < 0) {
        if (!gw->tiers && mem)
            mem->ops->destroy(mem);
        snprintf(err, errlen, "could not create the memory cache");
        return LLMC_ENOMEM;
    }
    llmc_tier_t *disk = NULL, *redis = NULL;
    int rc = open_redis(gw, &redis, err, errlen);
    if (rc == 0)
        rc = open_disk(gw, &disk, err, errlen);
    if (rc == 0 && !gw->zdict) {
        /* No disk tier: the memory tier still compresses, its dictionaries
           kept in memory only. */
        llmc_zdict_opts_t zo = {
            .on = cfg->compress_at_rest, .min_bytes = (size_t)cfg->compress_at_rest_min,
            .train_samples = (size_t)cfg->compress_dict_samples,
            .retrain_every = (size_t)cfg->compress_dict_retrain,
        };
        if ((rc = llmc_zdict_init(&zo, NULL, err, errlen)) == 0)
            gw->zdict = true;
    }
    if (rc < 0 || cfg->semantic == LLMC_CFG_SEMANTIC_OFF)
        return rc;
    /* Last: asked only when every exact tier missed. */
    bool remote = cfg->semantic_embedder == LLMC_CFG_SEMANTIC_EMBEDDER_OPENAI;
    llmc_embed_config_t ec = {
        .url = cfg->embed_url,
        .model = cfg->embed_model,
        .key = getenv("LLMC_EMBED_KEY"),
        .window_ms = (unsigned)cfg->semantic_batch_ms,
        .timeout_ms = (unsigned)cfg->semantic_timeout_ms,
    };
    if (remote && (!cfg->embed_url || !cfg->embed_url[0])) {
        snprintf(err, errlen, "--semantic-embedder openai needs --embed-url");
        return LLMC_EINVAL;
    }
    /* The window is part of each lookup's wait: one as long as the whole
       wait leaves the call nothing (every lookup a timeout, and libcurl
       given a 1 ms deadline). */
    if (remote && cfg->semantic_batch_ms >= cfg->semantic_timeout_ms) {
        snprintf(err, errlen,
                 "--semantic-batch-ms (%lld) must be shorter than --semantic-timeout-ms (%lld): "
                 "the batch window is part of each lookup's wait",
                 (long long)cfg->semantic_batch_ms, (long long)cfg->semantic_timeout_ms);
        return LLMC_EINVAL;
    }
    llmc_semantic_config_t sc = {
        .threshold = (float)cfg->semantic_threshold / 1000.0f,
        .search_ef = (unsigned)cfg->semantic_search_ef,
        .search_narrow = (unsigned)cfg->semantic_search_narrow,
        .search_margin = (float)cfg->semantic_search_margin / 1000.0f,
        .search_floats = !cfg->semantic_search_int8,
        .max_bytes = (uint64_t)cfg->max_memory,
        .shadow = cfg->semantic == LLMC_CFG_SEMANTIC_SHADOW,
        /* Its questions beside the disk tier's answers, indexed again at start. */
        .dir = disk ? cfg->data_dir_path : NULL,
        .store = disk,
        .remote = remote ? &ec : NULL,
        .max_error = (double)cfg->semantic_max_error / 1000.0,
        .verify_rate = (double)cfg->semantic_verify / 1000.0,
        .verify_per_min = (unsigned)cfg->semantic_verify_per_minute,
        .judge = cfg->semantic_judge == LLMC_CFG_SEMANTIC_JUDGE_EXACT   ? LLMC_JUDGE_EXACT
                 : cfg->semantic_judge == LLMC_CFG_SEMANTIC_JUDGE_MODEL ? LLMC_JUDGE_MODEL
                                                                        : LLMC_JUDGE_EMBED,
        /* The judge model is asked where the answers come from, as the gateway. */
        .judge_url = gw->upstream_base,
        .judge_model = cfg->semantic_judge_model,
        .judge_auth = gw->upstream_auth,
        .judge_timeout_ms = (unsigned)cfg->upstream_timeout,
        .judge_bound = (float)cfg->semantic_judge_bound / 1000.0f,
        .verify_start = (float)cfg->semantic_verify_start / 1000.0f,
        .verify_band = (float)cfg->semantic_verify_band / 1000.0f,
    };
    llmc_tier_t *sem = llmc_tier_semantic_new(&sc);
    if (!sem) {
        snprintf(err, errlen, "could not create the semantic tier");
        return LLMC_ENOMEM;
    }
    if ((rc = llmc_tier_set_add(gw->tiers, sem)) < 0) {
        snprintf(err, errlen, "the tier set refused the semantic tier (its operations or counters)");
        return rc;
    }
    /* Its questions shared with the other gateways on the Redis (issue 19). */
    llmc_redis_vec_config_t vc = {.maxlen = (uint64_t)cfg->redis_semantic_maxlen,
                                  .poll_ms = (unsigned)cfg->redis_semantic_poll_ms,
                                  .dir = sc.dir};
    if (redis && cfg->redis_semantic_maxlen > 0 &&
        (rc = llmc_tier_redis_share_semantic(redis, sem, &vc)) < 0)
        snprintf(err, errlen, "could not share the semantic tier through Redis");
    return rc;
}

/*
 * Each upstream call holds a descriptor beside its client's, so 10,000 slow
 * misses need 20,000 of them. Unless --upstream-max-connections says
 * otherwise, upstream connections get what the open-file limit (raised to
 * the hard one at start, main.c) leaves after --max-connections and a
 * reserve for listeners, loops, the access log and the disk tier: a call
 * past the cap waits in libcurl's queue for a connection instead of failing
 * to open a socket.
 */
#define FD_RESERVE 64
#define FD_RESERVE_PER_WORKER 16

static unsigned upstream_conns_per_worker(const llmc_config_t *cfg, unsigned nworkers)
{
    int64_t total = cfg->upstream_max_connections;
    struct rlimit rl;

    if (total == 0) {
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
            rl.rlim_cur > (rlim_t)INT32_MAX)
            return 0; /* no limit worth dividing */
        total = (int64_t)rl.rlim_cur - cfg->max_connections - FD_RESERVE -
                (int64_t)nworkers * FD_RESERVE_PER_WORKER;
        if (total < (int64_t)nworkers * 4) {
            total = (int64_t)nworkers * 4;
            fprintf(stderr, "llmcached: the open-file limit (%llu) leaves almost nothing for upstream "
                    "connections beside --max-connections %lld; each thread gets 4\n",
                    (unsigned long long)rl.rlim_cur, (long long)cfg->max_connections);
        }
    }
    int64_t per = total / nworkers;
    return per > 0 ? (unsigned)per : 1;
}

/* The counters by route and model, priced from --prices (gw_prices_load). */
static int open_bymodel(llmc_gw_t *gw, const llmc_config_t *cfg, char *err, size_t errlen)
{
    llmc_prices_t *prices = NULL;
    int rc = gw_prices_load(cfg->prices, &prices, err, errlen);
    if (rc < 0)
        return rc;
    if (!(gw->prices_opt = strdup(cfg->prices ? cfg->prices : ""))) {
        llmc_prices_free(prices);
        snprintf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    gw->bymodel = llmc_bymodel_new(gw->nworkers, (unsigned)cfg->metrics_max_models, prices);
    if (!gw->bymodel ||
        llmc_bymodel_namespaces(gw->bymodel, (unsigned)cfg->metrics_max_namespaces) < 0) {
        snprintf(err, errlen, "out of memory");
        return LLMC_ENOMEM;
    }
    return 0;
}

int llmc_gw_init(llmc_gw_t *gw, const llmc_config_t *cfg, const char *upstream_url,
                 const char *upstream_key, char *err, size_t errlen)
{
    memset(gw, 0, sizeof(*gw));
    gw->cfg = cfg;
    gw->log.fd = -1;
    pthread_mutex_init(&gw->log_async_mu, NULL);
    gw->started_ms = llmc_now_ms();
    live_init(gw, cfg);
    size_t ulen = strlen(upstream_url);
    while (ulen && upstream_url[ulen - 1] == '/')
        ulen--;
    if (ulen == 0 || ulen >= sizeof(gw->upstream_base) ||
        (strncmp(upstream_url, "http://", 7) && strncmp(upstream_url, "https://", 8))) {
        char shown[256];
        llmc_upstream_url_redact(upstream_url, shown, sizeof(shown));
        snprintf(err, errlen, "--upstream: '%s' is not an http(s) URL or 'mock'", shown);
        return LLMC_EINVAL;
    }
    memcpy(gw->upstream_base, upstream_url, ulen);
    gw->key_upstream = cfg->upstream == LLMC_CFG_UPSTREAM_MOCK ? "mock" : gw->upstream_base;
    if (upstream_key && asprintf(&gw->upstream_auth, "Authorization: Bearer %s", upstream_key) < 0)
        return LLMC_ENOMEM;
    gw->shared_scope = cfg->cache_scope == LLMC_CFG_CACHE_SCOPE_SHARED ||
                       (cfg->cache_scope == LLMC_CFG_CACHE_SCOPE_AUTO && upstream_key != NULL);
    /* Until llmc_gw_set_anthropic says the gateway holds an Anthropic key. */
    gw->anth_shared_scope = cfg->cache_scope == LLMC_CFG_CACHE_SCOPE_SHARED;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    gw->nworkers = cfg->threads > 0 ? (unsigned)cfg->threads : cores > 0 ? (unsigned)cores : 1;
    gw->upstream_conns = upstream_conns_per_worker(cfg, gw->nworkers);
    admin_token_init(gw, cfg);
    int rc = clients_init(gw, cfg, err, errlen);
    if (rc == 0)
        rc = parse_listen(gw, cfg, err, errlen);
    if (rc == 0)
        rc = llmc_forward_init(&gw->forward, cfg->forward_header, upstream_key != NULL, err,
                               errlen);
    if (rc == 0)
        rc = llmc_origin_init(&gw->origin, gw->listen_host,
                              gw->admin_listen ? gw->admin_host : NULL, cfg->allowed_host,
                              cfg->cors_origin, err, errlen);
    if (rc == 0)
        rc = open_log(gw, cfg, err, errlen);
    if (rc == 0)
        rc = open_tiers(gw, err, errlen);
    if (rc == 0 && !(gw->flights = llmc_flight_table_new(64)))
        rc = LLMC_ENOMEM;
    if (rc == 0 && !(gw->fpmap = llmc_fpmap_new(1u << 16)))
        rc = LLMC_ENOMEM;
    if (rc == 0)
        rc = open_bymodel(gw, cfg, err, errlen);
    if (rc < 0)
        llmc_gw_free(gw);
    return rc;
}

int llmc_gw_set_anthropic(llmc_gw_t *gw, const char *url, bool mock, const char *key,
                          char *err, size_t errlen)
{
    const llmc_config_t *cfg = gw->cfg;
    size_t ulen = strlen(url);
    while (ulen && url[ulen - 1] == '/')
        ulen--;
    if (ulen == 0 || ulen >= sizeof(gw->anth_base) ||
        (strncmp(url, "http://", 7) && strncmp(url, "https://", 8))) {
        char shown[256];
        llmc_upstream_url_redact(url, shown, sizeof(shown));
        snprintf(err, errlen, "--anthropic-upstream: '%s' is not an http(s) URL, 'auto' or 'mock'",
                 shown);
        return LLMC_EINVAL;
    }
    memcpy(gw->anth_base, url, ulen);
    gw->anth_base[ulen] = '\0';
    gw->anth_key_upstream = mock ? "mock" : gw->anth_base;
    free(gw->anth_auth);
    gw->anth_auth = NULL;
    if (key && asprintf(&gw->anth_auth, "x-api-key: %s", key) < 0)
        return LLMC_ENOMEM;
    gw->anth_shared_scope = cfg->cache_scope == LLMC_CFG_CACHE_SCOPE_SHARED ||
                            (cfg->cache_scope == LLMC_CFG_CACHE_SCOPE_AUTO && key != NULL);
    return 0;
}

int64_t llmc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void llmc_gw_free(llmc_gw_t *gw)
{
    llmc_tier_set_free(gw->tiers);
    if (gw->zdict)
        llmc_zdict_shutdown();
    gw->tiers = NULL;
    llmc_flight_table_free(gw->flights);
    gw->flights = NULL;
    llmc_fpmap_free(gw->fpmap);
    gw->fpmap = NULL;
    llmc_bymodel_free(gw->bymodel);
    gw->bymodel = NULL;
    free(gw->prices_opt);
    gw->prices_opt = NULL;
    llmc_log_close(&gw->log);
    llmc_origin_free(&gw->origin);
    pthread_mutex_destroy(&gw->log_async_mu);
    free(gw->upstream_auth);
    gw->upstream_auth = NULL;
    free(gw->anth_auth);
    gw->anth_auth = NULL;
    for (unsigned i = 0; gw->workers && i < gw->nworkers; i++)
        llmc_clients_unref(gw->workers[i].clients);
    llmc_clients_unref(gw->clients);
    gw->clients = NULL;
    pthread_mutex_destroy(&gw->clients_mu);
    pthread_mutex_destroy(&gw->admin_mu);
    free(gw->workers);
    gw->workers = NULL;
}
