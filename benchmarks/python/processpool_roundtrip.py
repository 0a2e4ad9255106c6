#!/usr/bin/env python3
"""Peer baseline for //benchmarks:process_benchmark: Python's ProcessPoolExecutor.

One worker process (ProcessPoolExecutor(max_workers=1)) and a function that returns its int
argument plus one. Measures:
  * start: a new executor until the result of its first call (the worker process starts lazily);
  * round trip: submit(f, x).result(), one call at a time after a warm-up (p50/p99 in us);
  * pipelined: `--pipelined` submits back to back, then wait for the last (calls per second).
Prints one line of JSON, e.g.
  {"roundtrip_p50_us": 130.5, "roundtrip_p99_us": 210.0, "pipelined_calls_per_s": 20000.0, ...}

  python3 benchmarks/python/processpool_roundtrip.py --roundtrips 5000 --pipelined 10000
"""

import argparse
import concurrent.futures
import json
import multiprocessing
import platform
import time


def add_one(x):
    return x + 1


def percentile_us(sorted_ns, p):
    index = min(len(sorted_ns) - 1, int(p * len(sorted_ns)))
    return sorted_ns[index] / 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roundtrips", type=int, default=5000, help="timed round trips")
    parser.add_argument("--pipelined", type=int, default=10000, help="pipelined submits")
    parser.add_argument("--warmup", type=int, default=500, help="untimed round trips first")
    args = parser.parse_args()
    if args.roundtrips < 1 or args.pipelined < 1 or args.warmup < 0:
        parser.error("--roundtrips and --pipelined must be >= 1, --warmup >= 0")

    clock = time.perf_counter_ns
    start = clock()
    with concurrent.futures.ProcessPoolExecutor(max_workers=1) as executor:
        if executor.submit(add_one, 1).result() != 2:
            raise SystemExit("add_one(1) did not return 2")
        start_us = (clock() - start) / 1000.0

        for i in range(args.warmup):  # the worker is up; let caches and the allocator settle
            executor.submit(add_one, i).result()

        samples = []
        for i in range(args.roundtrips):
            begin = clock()
            executor.submit(add_one, i).result()
            samples.append(clock() - begin)
        samples.sort()

        begin = clock()
        last = None
        for i in range(args.pipelined):
            last = executor.submit(add_one, i)
        if last.result() != args.pipelined:
            raise SystemExit("the last pipelined call returned a wrong value")
        pipelined_s = (clock() - begin) / 1e9

    print(json.dumps({
        "roundtrip_p50_us": percentile_us(samples, 0.50),
        "roundtrip_p99_us": percentile_us(samples, 0.99),
        "pipelined_calls_per_s": args.pipelined / pipelined_s,
        "start_us": start_us,
        "roundtrips": args.roundtrips,
        "pipelined": args.pipelined,
        "start_method": multiprocessing.get_start_method(),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
