# Scrapy settings for the side-by-side benchmark. They match what bench/python-docs.sh
# gives spindle: 16 requests at once, 16 per domain, no delay, robots.txt not fetched.
BOT_NAME = "docs_bench"
SPIDER_MODULES = ["docs_bench.spiders"]
NEWSPIDER_MODULE = "docs_bench.spiders"

CONCURRENT_REQUESTS = 16
CONCURRENT_REQUESTS_PER_DOMAIN = 16
DOWNLOAD_DELAY = 0
RANDOMIZE_DOWNLOAD_DELAY = False
ROBOTSTXT_OBEY = False
AUTOTHROTTLE_ENABLED = False
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
LOG_LEVEL = "INFO"
LOGSTATS_INTERVAL = 0
# Same body limit as spindle's default (1 GiB); no warnings for the large genindex-all page.
DOWNLOAD_WARNSIZE = 0
# The reactor Scrapy 2.19 installs by default; named so the run is explicit.
TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"

# docs.test is served by nginx on loopback. Instead of editing /etc/hosts, resolve it in
# the crawler, as spindle's --resolve does: BENCH_RESOLVE="docs.test=127.0.0.1,...".
DNS_RESOLVER = "docs_bench.resolver.FixedResolver"
