"""The benches still run: issue 2's bench/run-core.sh --smoke and issue 6's
bench/run.sh --smoke (each step ~1 s).

They measure and never judge speed; these tests only check that they exit 0
and print their figures in the expected shape.
"""
import os
import re
import shutil
import subprocess

import pytest

from conftest import ROOT, llmc_bin


def test_bench_smoke_prints_the_figures():
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    p = subprocess.run([str(ROOT / "bench" / "run-core.sh"), llmc_bin(), "--smoke"],
                       capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    out = p.stdout
    assert p.returncode == 0, f"stdout:\n{out}\nstderr:\n{p.stderr}"
    hit = re.search(r"^hit: ([\d.]+) req/s, p50 ([\d.]+\w+), p99 ([\d.]+\w+), cpu ([\d.]+) us/req"
                    r".*?(\d+) requests, (\d+) counted as hits", out, re.M)
    assert hit, out
    assert float(hit.group(1)) > 0
    requests, hits = int(hit.group(5)), int(hit.group(6))
    assert requests > 0 and hits >= requests, "every measured request must be a cache hit"
    miss = re.search(r"^misses: (\d+) distinct slow misses \((\d+) ms upstream\) in ([\d.]+) s "
                     r"\[(.*)\]$", out, re.M)
    assert miss, out
    assert miss.group(4) == f"200 MISS: {miss.group(1)}", miss.group(0)


def test_side_by_side_smoke_prints_the_table():
    """bench/run.sh --smoke (issue 6): installs nothing, skips the peers that are
    missing, runs each workload for about a second and prints the table."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    env = {k: v for k, v in os.environ.items()
           if k not in ("RUNS", "DURATION", "WARMUP", "THREADS", "SIZES", "CONNS", "ASK_CONNS",
                        "MOCK_MS", "MISSES", "FILL_N", "STAMPEDE_N", "PEERS", "WORKLOADS", "PERF",
                        "SERVER_CPU", "CLIENT_CPU", "RESULTS")}
    p = subprocess.run([str(ROOT / "bench" / "run.sh"), llmc_bin(), "--smoke"], env=env,
                       capture_output=True, text=True, timeout=240, stdin=subprocess.DEVNULL)
    out = p.stdout
    assert p.returncode == 0, f"stdout:\n{out}\nstderr:\n{p.stderr}"
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in out.splitlines()
            if l.startswith("| ") and not l.startswith("| Workload")]
    peers = {(r[0].split(",")[0], r[1]) for r in rows}
    # llmcached as users run it (its access log to a file), beside it with the log off.
    hit = next(r for r in rows
               if r[0].startswith("hit 1 KB") and r[1] == "llmcached (access log to a file)")
    assert float(hit[2].split()[0].replace(",", "")) > 0, hit
    assert ("/ask hit", "llmcached GET /ask") in peers, peers
    assert any(r[0].startswith("stampede") and r[1] == "llmcached" for r in rows), rows
    assert any("distinct misses" in r[0] for r in rows), rows
    assert any(r[0].startswith("memory:") for r in rows), rows
    if shutil.which("nginx"):
        assert any(r[1] == "nginx proxy_cache" for r in rows), rows
    if shutil.which("varnishd"):
        assert any(r[1] == "Varnish + bodyaccess" for r in rows) or \
            "skipping varnish" in p.stderr, rows


def test_scale_smoke_prints_the_table():
    """bench/scale.sh --smoke: the thread-scaling run, one second per count."""
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    p = subprocess.run([str(ROOT / "bench" / "scale.sh"), llmc_bin(), "--smoke"],
                       env={k: v for k, v in os.environ.items() if not k.startswith("SCALE_")},
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    assert re.search(r"^\| 1 \| [^|]+ \| [\d,]+ \| 1\.00× \|", p.stdout, re.M), p.stdout
