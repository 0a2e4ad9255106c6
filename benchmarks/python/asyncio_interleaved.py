#!/usr/bin/env python3
"""Peer baseline for //benchmarks:coroutine_benchmark: Python's asyncio on one event loop.

Measures, on one asyncio event loop (the loop of concurry's asyncio-mode worker):
  * interleaved timers: `--calls` tasks, each `await asyncio.sleep(--sleep-ms)`, gathered; calls per
    second (from the first create_task to the end of the gather) and the peak resident-memory
    growth of that run in kB (as benchmarks/measure.h's PeakRssGrowth: reset VmHWM through
    /proc/self/clear_refs, then VmHWM - VmRSS at the start; -1 where /proc does not allow it);
  * round trip: from another thread, `run_coroutine_threadsafe(empty(), loop).result()`, one call at
    a time (p50/p99 in us).
Prints one line of JSON, e.g.
  {"interleaved_calls_per_s": 250000.0, "interleaved_rss_growth_kb": 9000, "roundtrip_p50_us": 60.1,
   "roundtrip_p99_us": 120.3, ...}

  python3 benchmarks/python/asyncio_interleaved.py --calls 10000 --sleep-ms 10 --roundtrips 10000
"""

import argparse
import asyncio
import json
import platform
import threading
import time


def read_status_kb(field):
    """Returns VmRSS / VmHWM of this process in kB, or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRssGrowth:
    """The peak extra resident memory between construction and growth_kb()."""

    def __init__(self):
        self.baseline_kb = None
        try:
            with open("/proc/self/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except OSError:
            return
        self.baseline_kb = read_status_kb("VmRSS")

    def growth_kb(self):
        peak = read_status_kb("VmHWM")
        if self.baseline_kb is None or peak is None:
            return -1
        return max(0, peak - self.baseline_kb)


async def sleeper(seconds):
    await asyncio.sleep(seconds)


async def interleaved(calls, sleep_s):
    start = time.perf_counter_ns()
    await asyncio.gather(*(asyncio.create_task(sleeper(sleep_s)) for _ in range(calls)))
    return (time.perf_counter_ns() - start) / 1e9


async def empty():
    return None


def percentile_us(sorted_ns, p):
    index = min(len(sorted_ns) - 1, int(p * len(sorted_ns)))
    return sorted_ns[index] / 1000.0


def round_trips(loop, count):
    for _ in range(min(1000, count)):  # warm-up
        asyncio.run_coroutine_threadsafe(empty(), loop).result()
    samples = []
    clock = time.perf_counter_ns
    for _ in range(count):
        start = clock()
        asyncio.run_coroutine_threadsafe(empty(), loop).result()
        samples.append(clock() - start)
    samples.sort()
    return samples


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000, help="interleaved timer calls")
    parser.add_argument("--sleep-ms", type=float, default=10.0, help="each call's sleep in ms")
    parser.add_argument("--roundtrips", type=int, default=10000, help="timed round trips")
    args = parser.parse_args()
    if args.calls < 1 or args.roundtrips < 1 or args.sleep_ms < 0:
        parser.error("--calls and --roundtrips must be >= 1, --sleep-ms >= 0")

    loop = asyncio.new_event_loop()
    loop.run_until_complete(interleaved(min(100, args.calls), args.sleep_ms / 1000.0))  # warm-up
    rss = PeakRssGrowth()
    seconds = loop.run_until_complete(interleaved(args.calls, args.sleep_ms / 1000.0))
    rss_kb = rss.growth_kb()

    runner = threading.Thread(target=loop.run_forever)
    runner.start()
    try:
        samples = round_trips(loop, args.roundtrips)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        runner.join()
        loop.close()

    print(json.dumps({
        "interleaved_calls_per_s": args.calls / seconds,
        "interleaved_rss_growth_kb": rss_kb,
        "roundtrip_p50_us": percentile_us(samples, 0.50),
        "roundtrip_p99_us": percentile_us(samples, 0.99),
        "calls": args.calls,
        "sleep_ms": args.sleep_ms,
        "roundtrips": args.roundtrips,
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
