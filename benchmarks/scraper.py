"""Scrape a Veylor's /metrics once a second until killed (benchmarks/run.py's
"veylor-scraped" relay): what Prometheus does to it in production."""

from __future__ import annotations

import sys
import time
import urllib.request


def main() -> int:
    url = sys.argv[1]
    while True:
        started = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                response.read()
        except OSError as exc:
            print(f"scrape failed: {exc}", file=sys.stderr)
        time.sleep(max(0.0, 1.0 - (time.monotonic() - started)))


if __name__ == "__main__":
    sys.exit(main())
