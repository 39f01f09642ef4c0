#!/usr/bin/env python3
"""Fair share under a flood, against a running feelings-serve (standard library only).

FLOODERS clients send {"texts": [...]} with BATCH full-length reviews, back to back, for
SECONDS; one more client sends single reviews one after another. Prints the statuses of each
kind, p50/p99 of the single reviews, then how long after the flood stops a single review is
again answered within PROMPT seconds.

  python3 runtime/bench/flood.py http://127.0.0.1:8080 [--flooders 4] [--batch 64] [--seconds 60]
"""
import argparse
import collections
import http.client
import json
import threading
import time
import urllib.parse

REVIEW = "This film was a quiet delight, with honest acting and a story that stays with you. " * 15


def post(url, body, timeout):
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    started = time.monotonic()
    try:
        connection.request("POST", "/v1/classify", body, {"content-type": "application/json"})
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError as e:
        status = type(e).__name__
    finally:
        connection.close()
    return status, time.monotonic() - started


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--flooders", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--prompt", type=float, default=1.0)
    args = parser.parse_args()
    big = json.dumps({"texts": [REVIEW] * args.batch})
    one = json.dumps({"text": REVIEW})
    stop = threading.Event()
    flood_statuses = collections.Counter()

    def flood():
        while not stop.is_set():
            status, _ = post(args.url, big, 120)
            flood_statuses[status] += 1

    threads = [threading.Thread(target=flood) for _ in range(args.flooders)]
    for t in threads:
        t.start()
    time.sleep(1)
    singles, single_statuses = [], collections.Counter()
    ends = time.monotonic() + args.seconds
    while time.monotonic() < ends:
        status, took = post(args.url, one, 120)
        single_statuses[status] += 1
        if status == 200:
            singles.append(took)
    stop.set()
    stopped = time.monotonic()
    # The flood clients stop once their requests in flight end; time until a single review is
    # answered promptly again.
    while True:
        status, took = post(args.url, one, 120)
        if status == 200 and took < args.prompt:
            break
    recovered = time.monotonic() - stopped
    for t in threads:
        t.join()
    print(f"flood ({args.flooders} clients x {args.batch} reviews): {dict(flood_statuses)}")
    print(f"single reviews: {dict(single_statuses)}; p50 {percentile(singles, 0.5) * 1e3:.0f} ms, "
          f"p99 {percentile(singles, 0.99) * 1e3:.0f} ms, max {max(singles, default=float('nan')) * 1e3:.0f} ms")
    print(f"served within {args.prompt} s again {recovered:.2f} s after the flood stopped")


if __name__ == "__main__":
    main()
