#!/usr/bin/env python3
"""hnswlib on the vectors of `keel bench semantic`, for comparison.

The bench writes its vectors, queries and the exact top k of each query to
a file and runs this script on it (skipped when hnswlib is not installed:
`pip install hnswlib`). Usage:

    hnswlib_semantic.py FILE M EF_CONSTRUCTION THREADS ROUNDS EF[,EF...]

FILE is little-endian: the 8 bytes `KEELVEC1`, then n, dim, queries and k as
u32, then n*dim f32 vectors, queries*dim f32 queries, and queries*k u32 ids
of the exact top k. The index is built on THREADS threads; queries run one
at a time on one thread, timed around each `knn_query` call (which includes
about 2 µs of Python call overhead), ROUNDS times per EF, and the
round with the lowest p50 counts (as on the keel side). Prints one JSON
object.
"""

import json
import struct
import sys
import time


def main():
    path, m, ef_construction, threads, rounds, efs = sys.argv[1:7]
    m, ef_construction, threads, rounds = int(m), int(ef_construction), int(threads), int(rounds)
    efs = [int(ef) for ef in efs.split(",")]
    try:
        import hnswlib
        import numpy as np
    except ImportError as e:
        print(json.dumps({"skipped": f"{e.name} is not installed (pip install hnswlib)"}))
        return

    with open(path, "rb") as f:
        if f.read(8) != b"KEELVEC1":
            raise SystemExit(f"{path}: not a keel vector file")
        n, dim, nq, k = struct.unpack("<4I", f.read(16))
        data = np.fromfile(f, dtype="<f4", count=n * dim).reshape(n, dim)
        queries = np.fromfile(f, dtype="<f4", count=nq * dim).reshape(nq, dim)
        truth = np.fromfile(f, dtype="<u4", count=nq * k).reshape(nq, k)

    # The vectors are unit length: inner product ranks as cosine does.
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=m, ef_construction=ef_construction, random_seed=100)
    index.set_num_threads(threads)
    started = time.perf_counter()
    index.add_items(data, np.arange(n), num_threads=threads)
    build_s = time.perf_counter() - started

    index.set_num_threads(1)
    def measure(ef):
        times, found = [], 0
        started = time.perf_counter()
        for q, exact in zip(queries, truth):
            t = time.perf_counter_ns()
            labels, _ = index.knn_query(q, k=k, num_threads=1)
            times.append(time.perf_counter_ns() - t)
            found += len(set(labels[0].tolist()) & set(exact.tolist()))
        total_s = time.perf_counter() - started
        times.sort()
        pick = lambda q: times[round((len(times) - 1) * q)]
        return {"ef": ef, "recall": found / (nq * k), "p50_ns": pick(0.5), "p99_ns": pick(0.99), "qps": nq / total_s}

    rows = []
    for ef in efs:
        index.set_ef(max(ef, k))
        for q in queries[: min(50, nq)]:
            index.knn_query(q, k=k, num_threads=1)
        rows.append(min((measure(ef) for _ in range(max(rounds, 1))), key=lambda row: row["p50_ns"]))

    try:
        from importlib.metadata import version

        release = version("hnswlib")
    except Exception:
        release = "?"
    print(json.dumps({"version": release, "build_s": build_s, "rows": rows}))


if __name__ == "__main__":
    main()
