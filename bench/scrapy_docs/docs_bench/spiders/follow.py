"""Follow every same-host <a href>/<area href> link; one item per page: its URL and <title>.

The Scrapy side of bench/python-docs.sh, doing what `spindle crawl URL --field title=title`
does: every 2xx response is an item; HTML pages are searched for links; other pages
(text, images, archives) give an item with title None and no links.
"""

from urllib.parse import urlsplit

import scrapy
from scrapy.http import HtmlResponse


class FollowSpider(scrapy.Spider):
    name = "follow"

    def __init__(self, url, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.start_urls = [url]
        self.allowed_domains = [urlsplit(url).hostname]

    async def start(self):
        # Scrapy's default start requests skip the dupefilter (dont_filter=True), so a later
        # link back to the start page would fetch it twice; spindle fetches it once.
        for url in self.start_urls:
            yield scrapy.Request(url, callback=self.parse)

    def parse(self, response):
        if not isinstance(response, HtmlResponse):
            yield {"url": response.url, "title": None}
            return
        title = response.css("title::text").get()
        yield {"url": response.url, "title": title.strip() if title else title}
        for href in response.css("a::attr(href), area::attr(href)").getall():
            url = response.urljoin(href.strip())
            # spindle follows http(s) only; mailto: and javascript: are not pages.
            if url.startswith(("http://", "https://")):
                yield scrapy.Request(url, callback=self.parse)
