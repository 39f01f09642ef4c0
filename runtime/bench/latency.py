#!/usr/bin/env python3
"""Sequential latency of one route of a running feelings-serve (standard library only).

Sends N requests {"text": REVIEW} one after another on one kept-alive connection and prints
one JSON line: the first request's time, p50 and p99 in ms. REVIEW is the first review of the
IMDB file longer than 2,500 characters (2,818), so every request is a full 256-token review.

  python3 runtime/bench/latency.py 127.0.0.1 8080 /v1/classify 60 [--data ../shared/data/imdb/imdb.csv.gz]
"""
import argparse
import csv
import gzip
import http.client
import json
import sys
import time


def long_review(path):
    csv.field_size_limit(10**9)
    with gzip.open(path, "rt") as f:
        for row in csv.DictReader(f):
            if len(row["review"]) > 2500:
                return row["review"]
    sys.exit(f"{path}: no review longer than 2,500 characters")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("path")
    parser.add_argument("n", type=int)
    parser.add_argument("--data", default="../shared/data/imdb/imdb.csv.gz")
    args = parser.parse_args()
    body = json.dumps({"text": long_review(args.data)})
    connection = http.client.HTTPConnection(args.host, args.port)
    times = []
    for _ in range(args.n):
        started = time.perf_counter()
        connection.request("POST", args.path, body, {"content-type": "application/json"})
        answer = connection.getresponse()
        data = answer.read()
        times.append((time.perf_counter() - started) * 1e3)
        if answer.status != 200:
            sys.exit(f"HTTP {answer.status}: {data[:200]!r}")
    first = times[0]
    times.sort()
    print(json.dumps({
        "path": args.path, "n": args.n, "first_ms": round(first, 1),
        "p50_ms": round(times[args.n // 2], 1),
        "p99_ms": round(times[min(args.n - 1, args.n * 99 // 100)], 1),
    }))


if __name__ == "__main__":
    main()
