#!/usr/bin/env python3
"""Slow-header clients against a running feelings-serve (standard library only).

Opens CLIENTS connections that each send half a request header, then one more header line
every EVERY seconds; after WAIT seconds prints how many the server still holds open, and
checks that a normal request is answered meanwhile.

  python3 runtime/bench/slow_headers.py 127.0.0.1:8080 [--clients 3000] [--every 2] [--wait 20]
"""
import argparse
import http.client
import resource
import socket
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("address")
    parser.add_argument("--clients", type=int, default=3000)
    parser.add_argument("--every", type=float, default=2)
    parser.add_argument("--wait", type=float, default=20)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 256), hard))
    host, port = args.address.rsplit(":", 1)
    sockets = []
    for _ in range(args.clients):
        s = socket.create_connection((host, int(port)))
        s.sendall(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\n")
        s.setblocking(False)
        sockets.append(s)
    print(f"{len(sockets)} connections opened")
    started = time.monotonic()
    checked = False
    while time.monotonic() - started < args.wait:
        time.sleep(args.every)
        open_ones = []
        for s in sockets:
            try:
                s.sendall(b"X-Slow: yes\r\n")
                open_ones.append(s)
            except OSError:
                s.close()
        sockets = open_ones
        if not checked:
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            t = time.monotonic()
            connection.request("GET", "/healthz")
            status = connection.getresponse().status
            print(f"a normal request meanwhile: {status} in {(time.monotonic() - t) * 1e3:.0f} ms")
            checked = True
        print(f"after {time.monotonic() - started:.0f} s: {len(sockets)} still open")
    for s in sockets:
        s.close()


if __name__ == "__main__":
    main()
