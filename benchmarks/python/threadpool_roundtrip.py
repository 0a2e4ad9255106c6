#!/usr/bin/env python3
"""Peer baseline for //benchmarks:workers_benchmark: Python's concurrent.futures.

Measures, with ThreadPoolExecutor(max_workers=1) and an empty function:
  * round trip: submit() -> result() on the calling thread, one call at a time (p50/p99 in us);
  * pipelined: `--pipelined` submits back to back, then wait for the last (calls per second).
Prints one line of JSON, e.g.
  {"roundtrip_p50_us": 41.2, "roundtrip_p99_us": 80.3, "pipelined_calls_per_s": 95000.0, ...}

  python3 benchmarks/python/threadpool_roundtrip.py --roundtrips 10000 --pipelined 100000
"""

import argparse
import concurrent.futures
import json
import platform
import time


def noop():
    return None


def percentile_us(sorted_ns, p):
    index = min(len(sorted_ns) - 1, int(p * len(sorted_ns)))
    return sorted_ns[index] / 1000.0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roundtrips", type=int, default=10000, help="timed round trips")
    parser.add_argument("--pipelined", type=int, default=100000, help="pipelined submits")
    args = parser.parse_args()
    if args.roundtrips < 1 or args.pipelined < 1:
        parser.error("--roundtrips and --pipelined must be >= 1")

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        for _ in range(min(1000, args.roundtrips)):  # warm-up: start the thread, fill caches
            executor.submit(noop).result()

        samples = []
        clock = time.perf_counter_ns
        for _ in range(args.roundtrips):
            start = clock()
            executor.submit(noop).result()
            samples.append(clock() - start)
        samples.sort()

        start = clock()
        last = None
        for _ in range(args.pipelined):
            last = executor.submit(noop)
        last.result()
        pipelined_s = (clock() - start) / 1e9

    print(json.dumps({
        "roundtrip_p50_us": percentile_us(samples, 0.50),
        "roundtrip_p99_us": percentile_us(samples, 0.99),
        "pipelined_calls_per_s": args.pipelined / pipelined_s,
        "roundtrips": args.roundtrips,
        "pipelined": args.pipelined,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
