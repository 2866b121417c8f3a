#!/bin/sh
# run.sh: `make bench` calls this: builds the load generator and the peers, runs run.py (the
# echo benchmark of every stage), then each stage's own benchmark where it has one
# (stage05.py: latency under CPU-heavy load, and the cost of the hop to a worker; 06's
# codec_bench: each decoder's MB/s and bytes copied per input byte; stage07.py: broadcast
# fan-out beside redis PUBLISH/SUBSCRIBE; stage08.py: 08's pingpong at 1, 10, 100 connections
# beside 04 and libevent; kv.py, http.py, chat08.py, heartbeat.py, gateway.py, idle.py: 08's
# examples beside their peers; peers08.py: their table and SVG plots for the top README).
# All the work (and every knob: BENCH_REPEAT, BENCH_SECS, ...) is in run.py; see README.md.
set -e
here=$(dirname "$0")
make -s -C "$here" SAN= >&2
# 08 with the hop through SPSC rings (HOP=ring, in build-ring/), measured beside the default.
if [ -f "$here/../../08_framework/Makefile" ]; then
    make -s -C "$here/../../08_framework" SAN= HOP=ring build-ring/examples/echo >&2 ||
        echo "run.sh: 08_framework HOP=ring does not build: 08_t1_ring, 08_t2_ring skipped" >&2
fi
python3 "$here/run.py" "$@"
if [ -x "$here/../../05_threads_queue/server" ]; then
    python3 "$here/stage05.py"
fi
if [ -f "$here/../../06_codecs/Makefile" ]; then
    make -s -C "$here/../../06_codecs" SAN= bench
fi
if [ -x "$here/../../07_chat/server" ]; then
    python3 "$here/stage07.py"
fi
if [ -x "$here/../../08_framework/examples/pingpong_client" ]; then
    python3 "$here/stage08.py"
fi
# 08's examples beside the servers people would otherwise pick (each skips, saying so, when
# its peer or client is not installed): kv_server vs redis-server under redis-benchmark,
# http_server vs nginx under wrk, chat_server vs 07's server under chatload, heartbeat_server
# vs pingpong_server, gateway parallel vs --serial; idle.py: memory per idle connection beside
# redis-server and nginx.
for script in kv http chat08 heartbeat gateway idle; do
    if [ -f "$here/$script.py" ]; then
        python3 "$here/$script.py" || echo "run.sh: $script.py failed" >&2
    fi
done
# The side-by-side table and plots of the top README (results/peers08.md, peers08_*.svg) from
# the CSVs the six scripts just wrote.
python3 "$here/peers08.py" || echo "run.sh: peers08.py failed" >&2
