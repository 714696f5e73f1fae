"""The issue-2 bench still runs: bench/run-core.sh --smoke (each step ~1 s).

It measures and never judges speed; this test only checks that it exits 0 and
prints both figures in the expected shape.
"""
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
