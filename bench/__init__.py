"""credgate's benchmark suite: the gateway measured against baselines run side by side.

Absolute numbers depend on the machine; what carries from one machine to another is the ratio
to a baseline measured in the same run (a bare gRPC echo server behind the same mutual TLS, a
direct fan-out to the same sources), so every scenario is reported next to one.

    python -m bench                          # the full suite; see docs/benchmarks.md
    python -m bench --duration 1 --concurrency 4 --population 200 --index-sizes 200,1000

Everything is started by the suite itself on loopback, each server in its own process:
``bench.servers`` (echo, mock sources, gateway), ``bench.loadgen`` (closed-loop clients),
``bench.index_scale`` (fact-index seeding and lookups), ``bench.suite`` (the scenarios),
``bench.results`` (table and JSON).

``python -m bench.soak`` is the fault soak (docs/soak.md): the same servers, but the sources
fail by turns, the database stalls, and the verdict is whether every call still got a status
in time, nothing was left running, and SIGTERM ended the gateway (``bench.soak``,
``bench.soak_faults``, ``bench.soak_load``, ``bench.soak_gateway``).
"""
