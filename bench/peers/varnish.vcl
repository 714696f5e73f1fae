# bench/peers/varnish.vcl: Varnish caching POST by its body (issue 6, peer c),
# with varnish-modules' bodyaccess vmod. side_by_side.py fills in @MOCK_PORT@
# and starts it as
#   varnishd -F -j none -n TMPDIR -a 127.0.0.1:PORT -f THIS -s malloc,256m
vcl 4.1;

import std;
import bodyaccess;

backend mock {
    .host = "127.0.0.1";
    .port = "@MOCK_PORT@";
}

sub vcl_recv {
    if (req.url == "/healthz") {
        return (synth(200, "ok"));
    }
    if (req.method == "POST") {
        # Buffer the body so that vcl_hash can read it and the backend fetch
        # can still send it.
        if (!std.cache_req_body(1MB)) {
            return (synth(413, "body too large"));
        }
        # Varnish turns a miss into a GET; remember the method for the fetch.
        set req.http.X-Bench-Method = req.method;
        return (hash);
    }
}

sub vcl_hash {
    # Added to the built-in vcl_hash's URL and Host.
    bodyaccess.hash_req_body();
}

sub vcl_backend_fetch {
    if (bereq.http.X-Bench-Method) {
        set bereq.method = bereq.http.X-Bench-Method;
        unset bereq.http.X-Bench-Method;
    }
}

sub vcl_backend_response {
    if (beresp.status == 200) {
        set beresp.ttl = 5m;
    }
}

sub vcl_deliver {
    if (obj.hits > 0) {
        set resp.http.X-Cache = "HIT";
    } else {
        set resp.http.X-Cache = "MISS";
    }
}
