/*
 * http/abort.c: llmc_http_abort, ending a request without finishing its
 * response (see http.h).
 *
 * Kept apart from respond.c only because it was written on the upstream
 * branch while the HTTP server was being written on its own; it belongs next
 * to llmc_http_stream_end and can move there.
 *
 * Decisions a newcomer would otherwise get wrong:
 * - It does not close at once: the request goes to the WRITE phase with
 *   keep-alive off, so what is queued is still written, then the normal
 *   finish lingers (FIN, drain input). The client sees the bytes sent so far
 *   and then EOF, which for a chunked or length-framed answer is a truncation
 *   and for a request without any answer is a connection closed unanswered.
 * - on_abort is not called: the handler ended the request itself.
 */
#include "http/http_int.h"

void llmc_http_abort(llmc_http_req_t *req)
{
    llmc__http_conn_t *c = LLMC__CONN_OF(req);

    if (c->phase != LLMC_PH_HANDLER && c->phase != LLMC_PH_STREAM)
        return;
    req->on_abort = NULL;
    req->keep_alive = false;
    c->phase = LLMC_PH_WRITE;
    llmc__http_maybe_finish(c);
}
