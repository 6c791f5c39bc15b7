"""A DNS resolver that answers fixed names from BENCH_RESOLVE and asks the system for the rest.

BENCH_RESOLVE="docs.test=127.0.0.1,other.test=127.0.0.2" — the Scrapy counterpart of
spindle's `--resolve docs.test:8080:127.0.0.1`, so /etc/hosts is left alone.
"""

import os

from twisted.internet import defer
from scrapy.resolver import CachingThreadedResolver


def _fixed():
    table = {}
    for entry in os.environ.get("BENCH_RESOLVE", "").split(","):
        if "=" in entry:
            host, addr = entry.split("=", 1)
            table[host.strip().lower()] = addr.strip()
    return table


class FixedResolver(CachingThreadedResolver):
    fixed = _fixed()

    def getHostByName(self, name, timeout=None):
        addr = self.fixed.get(name.lower())
        if addr is not None:
            return defer.succeed(addr)
        return super().getHostByName(name, timeout)
