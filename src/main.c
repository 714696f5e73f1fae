/*
 * main.c: llmcached's entry point. Reads the options, starts the built-in
 * mock model when asked to, and runs the gateway until SIGINT/SIGTERM
 * (SIGHUP reads the options again: gateway.h, llmc_gw_reload_options).
 *
 *   llmcached [--option value ...]    the gateway
 *   llmcached mock [--listen ...]     the mock model on its own
 */
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "config.h"
#include "gateway/gateway.h"
#include "llmc/error.h"
#include "mock/mock.h"
#include "upstream/upstream.h"

extern char **environ;

static void on_ready(llmc_gw_t *gw, void *arg)
{
    (void)arg;
    char conns[32] = "no cap", upstream[sizeof(gw->upstream_base) + 8];
    llmc_upstream_url_redact(gw->upstream_base, upstream, sizeof(upstream));
    if (gw->upstream_conns)
        snprintf(conns, sizeof(conns), "%u", gw->upstream_conns);
    fprintf(stderr, "llmcached listening on http://%s%s%s:%d (%u threads, upstream %s, "
            "upstream connections per thread: %s)\n",
            strchr(gw->listen_host, ':') ? "[" : "", gw->listen_host,
            strchr(gw->listen_host, ':') ? "]" : "", gw->listen_port, gw->nworkers,
            upstream, conns);
    if (gw->admin_listen)
        fprintf(stderr, "llmcached: admin routes, /stats and /metrics on http://%s%s%s:%d\n",
                strchr(gw->admin_host, ':') ? "[" : "", gw->admin_host,
                strchr(gw->admin_host, ':') ? "]" : "", gw->admin_port);
}

static const char *upstream_key(void)
{
    const char *k = getenv("LLMC_UPSTREAM_KEY");
    if (!k || !*k)
        k = getenv("OPENAI_API_KEY");
    return k && *k ? k : NULL;
}

/* The gateway's own key for the Anthropic upstream, or NULL. */
static const char *anthropic_key(void)
{
    const char *k = getenv("LLMC_ANTHROPIC_KEY");
    if (!k || !*k)
        k = getenv("ANTHROPIC_API_KEY");
    return k && *k ? k : NULL;
}

/* Where POST /v1/messages goes (--anthropic-upstream): the built-in mock
   (mock_url) when it says mock, or auto with --upstream mock; Anthropic's
   API for auto otherwise. */
static int set_anthropic(llmc_gw_t *gw, const llmc_config_t *cfg, const char *mock_url,
                         char *err, size_t errlen)
{
    bool mock = cfg->anthropic_upstream == LLMC_CFG_ANTHROPIC_UPSTREAM_MOCK ||
                (cfg->anthropic_upstream == LLMC_CFG_ANTHROPIC_UPSTREAM_AUTO &&
                 cfg->upstream == LLMC_CFG_UPSTREAM_MOCK);
    const char *url = mock ? mock_url
                      : cfg->anthropic_upstream == LLMC_CFG_ANTHROPIC_UPSTREAM_URL
                          ? cfg->anthropic_upstream_url
                          : "https://api.anthropic.com/v1";
    return llmc_gw_set_anthropic(gw, url, mock, anthropic_key(), err, errlen);
}

static int run_gateway(llmc_config_t *cfg, int argc, char **argv)
{
    char err[512] = "", url[1100], mock_url[64] = "";
    llmc_mock_t *mock = NULL;
    const char *key = upstream_key();
    if (cfg->upstream == LLMC_CFG_UPSTREAM_MOCK ||
        cfg->anthropic_upstream == LLMC_CFG_ANTHROPIC_UPSTREAM_MOCK) {
        llmc_mock_config_t mc = {.latency_ms = (uint64_t)cfg->mock_latency};
        if (llmc_mock_start(&mc, "127.0.0.1", 0, &mock, err, sizeof(err)) < 0) {
            fprintf(stderr, "llmcached: could not start the mock model: %s\n", err);
            return 1;
        }
        snprintf(mock_url, sizeof(mock_url), "http://127.0.0.1:%d/v1", llmc_mock_port(mock));
        fprintf(stderr, "llmcached: using the built-in mock model at %s (%lld ms latency)%s\n",
                mock_url, (long long)cfg->mock_latency,
                key ? "" : "; set LLMC_UPSTREAM_KEY and --upstream to use a real model");
    }
    if (cfg->upstream == LLMC_CFG_UPSTREAM_MOCK) {
        snprintf(url, sizeof(url), "%s", mock_url);
    } else {
        snprintf(url, sizeof(url), "%s", cfg->upstream_url);
    }
    /* libhttp-parser has its own process-wide head limit (80 KB); ours is
       enforced exactly by the server, so the parser's must not be lower. */
    http_parser_set_max_header_size((uint32_t)cfg->max_header_bytes + 1024);
    llmc_gw_t gw;
    int rc = llmc_gw_init(&gw, cfg, url, key, err, sizeof(err));
    if (rc == 0 && (rc = set_anthropic(&gw, cfg, mock_url, err, sizeof(err))) < 0)
        llmc_gw_free(&gw);
    if (rc == 0) {
        /* Where a SIGHUP reads the options again (the --config file may
           have changed; the flags and the environment cannot). */
        gw.argc = argc;
        gw.argv = argv;
        gw.envp = environ;
        rc = llmc_gw_run(&gw, on_ready, NULL, err, sizeof(err));
        llmc_gw_free(&gw);
    }
    if (mock)
        llmc_mock_stop(mock);
    if (rc < 0) {
        fprintf(stderr, "llmcached: %s\n", err[0] ? err : llmc_strerror(rc));
        return 1;
    }
    return 0;
}

/* Every slow miss holds a client and an upstream socket, and a mock may hold
   thousands of connections: take what the hard open-file limit allows (what
   nginx's worker_rlimit_nofile does), before anything sizes itself by it. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    raise_fd_limit();
    if (llmc_upstream_global_init() != 0) {
        fprintf(stderr, "llmcached: libcurl failed to initialise\n");
        return 1;
    }
    if (argc > 1 && strcmp(argv[1], "mock") == 0)
        return llmc_mock_main(argc - 1, argv + 1);

    llmc_config_t cfg;
    bool help = false, help_md = false;
    char err[512] = "";
    int rc = 1;
    if (llmc_config_load(&cfg, argc, argv, environ, &help, &help_md, err, sizeof(err)) < 0) {
        fprintf(stderr, "llmcached: %s\n(see llmcached --help)\n", err);
    } else if (help) {
        llmc_config_help(stdout, argv[0]);
        rc = 0;
    } else if (help_md) {
        llmc_config_markdown(stdout);
        rc = 0;
    } else {
        rc = run_gateway(&cfg, argc, argv);
    }
    llmc_config_free(&cfg);
    return rc;
}
