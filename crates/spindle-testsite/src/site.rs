//! What a host serves: generated link graphs or hand-made pages.
//!
//! Everything here is pure and deterministic, so tests can render pages and walk
//! the link graph in-process (see [`Site::render`], [`Site::links`], [`Site::paths`])
//! without going through HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::app::HttpRequest;

/// Content type of HTML pages.
pub const HTML: &str = "text/html; charset=utf-8";
/// Content type of `.txt` pages (e.g. `/robots.txt`).
pub const TEXT: &str = "text/plain; charset=utf-8";

const DEFAULT_LINKS_PER_PAGE: usize = 5;
const DEFAULT_SEED: u64 = 0x5EED_5EED;

/// One response as the server will send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page {
    pub status: u16,
    pub content_type: String,
    /// Extra response headers (e.g. `Location` for redirects).
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    /// A page with the content type chosen from the path: `text/plain` for `*.txt`,
    /// `text/html` otherwise.
    pub fn new(path: &str, status: u16, body: impl Into<String>) -> Page {
        let p = path.split(['?', '#']).next().unwrap_or("");
        let content_type = if p.ends_with(".txt") { TEXT } else { HTML };
        Page {
            status,
            content_type: content_type.to_string(),
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// The standard 404 page.
    pub fn not_found() -> Page {
        Page::new(
            "/",
            404,
            "<!DOCTYPE html>\n<html><head><title>Not Found</title></head>\
             <body><h1>404 Not Found</h1></body></html>\n",
        )
    }
}

#[derive(Clone, Debug)]
enum Kind {
    /// `/` plus `/p/0` … `/p/{n-1}`.
    Generated(usize),
    /// Only the explicitly given pages.
    Pages,
}

/// What one host serves. Build with [`Site::generated`] or [`Site::pages`], then
/// chain the builder methods.
#[derive(Clone, Debug)]
pub struct Site {
    kind: Kind,
    latency: Duration,
    links_per_page: usize,
    seed: u64,
    extra_links: Vec<String>,
    query_variants: bool,
    /// Exact path (+ query) → page. Consulted before the generated pages.
    pages: BTreeMap<String, Page>,
    /// Answers requests before the pages do; see [`Site::handler`].
    handler: Option<Handler>,
    /// Latency that depends on load; see [`Site::load`].
    load: Option<crate::load::Load>,
}

/// A function that answers some requests itself (`None`: not mine).
#[derive(Clone)]
struct Handler(std::sync::Arc<RouteFn>);

type RouteFn = dyn Fn(&HttpRequest) -> Option<Page> + Send + Sync;

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handler")
    }
}

impl Site {
    /// A generated site with pages `/` and `/p/0` … `/p/{n-1}`.
    ///
    /// Page `/p/i` has `<title>Page i</title>`, `<h1>Heading i</h1>` and
    /// `<p class="price"> i.99 </p>`. The root `/` has `<title>Home</title>`,
    /// `<h1>Home</h1>` and no price. Every page links to `/` and to
    /// `links_per_page` other pages, the first of which is always the next page
    /// (`/p/0` from `/`, `/p/{i+1}` from `/p/i`) when it exists, so every page is
    /// reachable from `/`. The other targets are pseudo-random but fixed by
    /// [`Site::seed`]. Links are mostly relative (`/p/7`), some absolute
    /// (`http://host:port/p/7`), some with a fragment (`/p/7#top`).
    pub fn generated(n: usize) -> Site {
        Site {
            kind: Kind::Generated(n),
            latency: Duration::ZERO,
            links_per_page: DEFAULT_LINKS_PER_PAGE,
            seed: DEFAULT_SEED,
            extra_links: Vec::new(),
            query_variants: false,
            pages: BTreeMap::new(),
            handler: None,
            load: None,
        }
    }

    /// A hand-made site: `(path, status, body)` triples. `path` may include a
    /// query string; a request matches the exact path + query first, then the path
    /// alone. Content type is `text/html; charset=utf-8` (`text/plain` for paths
    /// ending in `.txt`). Everything else is 404.
    pub fn pages<P, B>(pages: impl IntoIterator<Item = (P, u16, B)>) -> Site
    where
        P: Into<String>,
        B: Into<String>,
    {
        let mut site = Site::generated(0);
        site.kind = Kind::Pages;
        for (path, status, body) in pages {
            site = site.page(path, status, body);
        }
        site
    }

    /// Adds (or replaces) one page; works on generated sites too, where it
    /// overrides the generated page of the same path.
    pub fn page(mut self, path: impl Into<String>, status: u16, body: impl Into<String>) -> Site {
        let path = path.into();
        let page = Page::new(&path, status, body);
        self.pages.insert(path, page);
        self
    }

    /// Serves `/robots.txt` with status 200 and this body (default: 404).
    pub fn robots_txt(self, body: impl Into<String>) -> Site {
        self.page("/robots.txt", 200, body)
    }

    /// Makes `from` answer with a redirect (`status`, e.g. 301/302) to `to`.
    pub fn redirect(mut self, from: impl Into<String>, status: u16, to: impl Into<String>) -> Site {
        let from = from.into();
        let to = to.into();
        let mut page = Page::new(
            &from,
            status,
            format!("<html><body><a href=\"{to}\">moved</a></body></html>\n"),
        );
        page.content_type = HTML.to_string();
        page.headers.push(("Location".to_string(), to));
        self.pages.insert(from, page);
        self
    }

    /// Number of links to other `/p/…` pages on each generated page (default 5).
    /// The link to the next page counts towards it but is always present.
    pub fn links_per_page(mut self, k: usize) -> Site {
        self.links_per_page = k;
        self
    }

    /// Delay between the arrival of a request head and the response (default 0).
    /// Applies to every response of this host (including 404s and robots.txt),
    /// not to 421s.
    pub fn latency(mut self, d: Duration) -> Site {
        self.latency = d;
        self
    }

    /// Makes answers depend on load (see [`crate::Load`]), on top of [`Site::latency`].
    pub fn load(mut self, load: crate::load::Load) -> Site {
        self.load = Some(load);
        self
    }

    /// The load model, if any.
    pub fn get_load(&self) -> Option<&crate::load::Load> {
        self.load.as_ref()
    }

    /// Seed of the link generator (default fixed, so pages are stable across runs).
    pub fn seed(mut self, seed: u64) -> Site {
        self.seed = seed;
        self
    }

    /// Links (absolute URLs, used verbatim as `href`) appended to every generated page.
    pub fn extra_links(mut self, links: Vec<String>) -> Site {
        self.extra_links = links;
        self
    }

    /// When set, each generated page also links to `/p/{j}?b=2&a=1` and
    /// `/p/{j}?a=1&b=2` for some `j`. The server answers any query on `/p/{j}` with
    /// page `j`.
    pub fn query_variants(mut self, on: bool) -> Site {
        self.query_variants = on;
        self
    }

    /// Lets `f` answer requests before the pages do, from the whole request
    /// (method, headers, body): forms, sessions, JSON APIs. Returning `None`
    /// falls through to the pages.
    pub fn handler(
        mut self,
        f: impl Fn(&HttpRequest) -> Option<Page> + Send + Sync + 'static,
    ) -> Site {
        self.handler = Some(Handler(std::sync::Arc::new(f)));
        self
    }

    /// The response to a whole request: the handler's, else the page's (see [`Site::render`]).
    pub fn answer(&self, request: &HttpRequest, origin: &str) -> Page {
        if let Some(page) = self.handler.as_ref().and_then(|h| (h.0)(request)) {
            return page;
        }
        self.render(&request.path, origin)
    }

    /// The configured latency.
    pub fn get_latency(&self) -> Duration {
        self.latency
    }

    /// Number of generated `/p/…` pages (0 for hand-made sites).
    pub fn generated_pages(&self) -> usize {
        match self.kind {
            Kind::Generated(n) => n,
            Kind::Pages => 0,
        }
    }

    /// Paths of all pages that answer 2xx/3xx/…: the generated ones (`/`, `/p/0`, …)
    /// followed by the explicitly added ones (in sorted order).
    pub fn paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Kind::Generated(n) = self.kind {
            out.push("/".to_string());
            out.extend((0..n).map(|i| format!("/p/{i}")));
        }
        for k in self.pages.keys() {
            if !out.contains(k) {
                out.push(k.clone());
            }
        }
        out
    }

    /// The response for `path_and_query` (as received: path plus optional query; a
    /// fragment is ignored). `origin` is `http://host:port`, used for absolute links.
    pub fn render(&self, path_and_query: &str, origin: &str) -> Page {
        let pq = path_and_query.split('#').next().unwrap_or("");
        let path = pq.split('?').next().unwrap_or("");
        if let Some(p) = self.pages.get(pq).or_else(|| self.pages.get(path)) {
            return p.clone();
        }
        match self.generated_index(path) {
            Some(id) => Page::new(path, 200, self.render_generated(id, origin)),
            None => Page::not_found(),
        }
    }

    /// The `href`s on the page at `path_and_query`, exactly as written in the HTML
    /// (relative, absolute or with fragment). Empty for 404s. For hand-made pages
    /// the `href="…"` attributes are extracted from the body.
    pub fn links(&self, path_and_query: &str, origin: &str) -> Vec<String> {
        let pq = path_and_query.split('#').next().unwrap_or("");
        let path = pq.split('?').next().unwrap_or("");
        if let Some(p) = self.pages.get(pq).or_else(|| self.pages.get(path)) {
            return extract_hrefs(&p.body);
        }
        match self.generated_index(path) {
            Some(id) => self
                .generated_links(id, origin)
                .into_iter()
                .map(|l| l.href)
                .collect(),
            None => Vec::new(),
        }
    }

    /// `None` for `/`, `Some(i)` for `/p/i`, wrapped in `Some` if the page exists.
    fn generated_index(&self, path: &str) -> Option<Option<usize>> {
        let Kind::Generated(n) = self.kind else {
            return None;
        };
        if path == "/" {
            return Some(None);
        }
        let rest = path.strip_prefix("/p/")?;
        if rest.is_empty()
            || !rest.bytes().all(|b| b.is_ascii_digit())
            || (rest.len() > 1 && rest.starts_with('0'))
        {
            return None;
        }
        let i: usize = rest.parse().ok()?;
        (i < n).then_some(Some(i))
    }

    fn generated_links(&self, id: Option<usize>, origin: &str) -> Vec<Link> {
        let Kind::Generated(n) = self.kind else {
            return Vec::new();
        };
        let page_key = id.map_or(0, |i| i as u64 + 1);
        let mut rng = Rng::new(self.seed ^ mix(page_key.wrapping_mul(0x2545_F491_4F6C_DD1D)));
        let mut links = Vec::new();

        let form = |rng: &mut Rng, path: &str| -> String {
            match rng.below(100) {
                0..=69 => path.to_string(),
                70..=84 => format!("{origin}{path}"),
                _ => format!("{path}#top"),
            }
        };

        // Back to the root.
        let href = form(&mut rng, "/");
        links.push(Link {
            href,
            text: "Home".into(),
        });

        // The next page, then random others.
        let next = match id {
            None => 0,
            Some(i) => i + 1,
        };
        let mut count = 0;
        if next < n {
            let href = form(&mut rng, &format!("/p/{next}"));
            links.push(Link {
                href,
                text: format!("Page {next}"),
            });
            count += 1;
        }
        let can_pick_other = n > 1 || (n == 1 && id.is_none());
        while count < self.links_per_page && can_pick_other {
            let j = rng.below(n as u64) as usize;
            if Some(j) == id {
                continue;
            }
            let href = form(&mut rng, &format!("/p/{j}"));
            links.push(Link {
                href,
                text: format!("Page {j}"),
            });
            count += 1;
        }

        if self.query_variants && n > 0 {
            let j = rng.below(n as u64) as usize;
            for q in ["b=2&a=1", "a=1&b=2"] {
                links.push(Link {
                    href: format!("/p/{j}?{q}"),
                    text: format!("Page {j} ({q})"),
                });
            }
        }

        for (k, l) in self.extra_links.iter().enumerate() {
            links.push(Link {
                href: l.clone(),
                text: format!("Elsewhere {k}"),
            });
        }
        links
    }

    fn render_generated(&self, id: Option<usize>, origin: &str) -> String {
        let mut s = String::with_capacity(1024);
        s.push_str("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n");
        match id {
            None => s.push_str("<title>Home</title>\n</head>\n<body>\n<h1>Home</h1>\n"),
            Some(i) => s.push_str(&format!(
                "<title>Page {i}</title>\n</head>\n<body>\n<h1>Heading {i}</h1>\n\
                 <p class=\"price\"> {i}.99 </p>\n"
            )),
        }
        s.push_str("<ul class=\"links\">\n");
        for l in self.generated_links(id, origin) {
            s.push_str(&format!(
                "  <li><a href=\"{}\">{}</a></li>\n",
                escape_attr(&l.href),
                escape_text(&l.text)
            ));
        }
        s.push_str("</ul>\n</body>\n</html>\n");
        s
    }
}

struct Link {
    href: String,
    text: String,
}

fn escape_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
}

fn escape_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// Naive `href="…"` / `href='…'` extraction (enough for test pages).
fn extract_hrefs(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = html.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = lower[from..].find("href=") {
        let start = from + pos + 5;
        let rest = &html[start..];
        let (val, used) = match rest.chars().next() {
            Some(q @ ('"' | '\'')) => match rest[1..].find(q) {
                Some(e) => (&rest[1..1 + e], e + 2),
                None => break,
            },
            Some(_) => {
                let e = rest
                    .find(|c: char| c.is_whitespace() || c == '>')
                    .unwrap_or(rest.len());
                (&rest[..e], e)
            }
            None => break,
        };
        out.push(unescape(val));
        from = start + used.max(1);
    }
    out
}

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: small, deterministic, good enough for picking links.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashSet, VecDeque};

    const ORIGIN: &str = "http://a.test:8080";

    /// Resolves an href found on the site to a path (+query), dropping the fragment.
    fn to_path(href: &str) -> Option<String> {
        let h = href.split('#').next().unwrap();
        if let Some(rest) = h.strip_prefix(ORIGIN) {
            Some(rest.to_string())
        } else if h.starts_with('/') {
            Some(h.to_string())
        } else {
            None
        }
    }

    fn bfs(site: &Site) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut q = VecDeque::from(["/".to_string()]);
        seen.insert("/".to_string());
        while let Some(p) = q.pop_front() {
            for href in site.links(&p, ORIGIN) {
                if let Some(path) = to_path(&href) {
                    let path = path.split('?').next().unwrap().to_string();
                    if seen.insert(path.clone()) {
                        q.push_back(path);
                    }
                }
            }
        }
        seen
    }

    #[test]
    fn every_page_reachable() {
        for (n, k) in [(0, 5), (1, 5), (2, 0), (10, 1), (500, 3), (2000, 10)] {
            let site = Site::generated(n).links_per_page(k);
            let reached = bfs(&site);
            let all: HashSet<String> = site.paths().into_iter().collect();
            assert_eq!(reached, all, "n={n} k={k}");
            assert_eq!(all.len(), n + 1);
        }
    }

    #[test]
    fn page_content() {
        let site = Site::generated(20);
        let p = site.render("/p/3", ORIGIN);
        assert_eq!(p.status, 200);
        assert_eq!(p.content_type, HTML);
        assert!(p.body.contains("<title>Page 3</title>"));
        assert!(p.body.contains("<h1>Heading 3</h1>"));
        assert!(p.body.contains("<p class=\"price\"> 3.99 </p>"));
        // query strings are ignored for generated pages
        assert_eq!(site.render("/p/3?x=1", ORIGIN).body, p.body);
        assert_eq!(site.render("/p/20", ORIGIN).status, 404);
        assert_eq!(site.render("/p/03", ORIGIN).status, 404);
        assert_eq!(site.render("/p/", ORIGIN).status, 404);
        assert_eq!(site.render("/robots.txt", ORIGIN).status, 404);
        assert_eq!(site.render("/", ORIGIN).status, 200);
    }

    #[test]
    fn links_are_deterministic_and_varied() {
        let site = Site::generated(300).links_per_page(8);
        let a: Vec<_> = (0..300)
            .map(|i| site.links(&format!("/p/{i}"), ORIGIN))
            .collect();
        let b: Vec<_> = (0..300)
            .map(|i| {
                Site::generated(300)
                    .links_per_page(8)
                    .links(&format!("/p/{i}"), ORIGIN)
            })
            .collect();
        assert_eq!(a, b);
        let c: Vec<_> = (0..300)
            .map(|i| {
                Site::generated(300)
                    .links_per_page(8)
                    .seed(7)
                    .links(&format!("/p/{i}"), ORIGIN)
            })
            .collect();
        assert_ne!(a, c);
        let all: Vec<&String> = a.iter().flatten().collect();
        assert!(all.iter().any(|h| h.starts_with("http://a.test:8080/p/")));
        assert!(all
            .iter()
            .any(|h| h.starts_with("/p/") && h.ends_with("#top")));
        assert!(all.iter().any(|h| h.starts_with("/p/") && !h.contains('#')));
        for (i, links) in a.iter().enumerate() {
            // root link + 8 page links
            assert_eq!(links.len(), 9);
            let paths: Vec<String> = links.iter().filter_map(|h| to_path(h)).collect();
            assert_eq!(paths[0], "/");
            if i + 1 < 300 {
                assert!(paths.contains(&format!("/p/{}", i + 1)));
            }
            assert!(!paths.contains(&format!("/p/{i}")), "no self links");
        }
    }

    #[test]
    fn query_variants_and_extra_links() {
        let site = Site::generated(10).query_variants(true).extra_links(vec![
            "http://b.test:1/p/1".into(),
            "http://offsite.example/".into(),
        ]);
        let links = site.links("/p/4", ORIGIN);
        let q: Vec<_> = links.iter().filter(|l| l.contains('?')).collect();
        assert_eq!(q.len(), 2);
        assert!(q[0].ends_with("?b=2&a=1") && q[1].ends_with("?a=1&b=2"));
        assert_eq!(q[0].split('?').next(), q[1].split('?').next());
        assert!(links.ends_with(&[
            "http://b.test:1/p/1".to_string(),
            "http://offsite.example/".to_string()
        ]));
        let body = site.render("/p/4", ORIGIN).body;
        assert!(body.contains("?b=2&amp;a=1\""));
        assert!(body.contains("href=\"http://offsite.example/\""));
    }

    #[test]
    fn hand_made_pages() {
        let site = Site::pages(vec![
            (
                "/",
                200,
                "<html><a href=\"/a\">a</a> <a href='/b?x=1'>b</a></html>",
            ),
            ("/a", 200, "<html>A</html>"),
            ("/b?x=1", 200, "B1"),
            ("/b", 500, "B"),
        ])
        .robots_txt("User-agent: *\nDisallow: /a\n")
        .redirect("/old", 301, "/a");
        assert_eq!(site.links("/", ORIGIN), vec!["/a", "/b?x=1"]);
        assert_eq!(site.render("/a", ORIGIN).body, "<html>A</html>");
        assert_eq!(site.render("/b?x=1", ORIGIN).body, "B1");
        assert_eq!(site.render("/b?x=2", ORIGIN).status, 500);
        assert_eq!(site.render("/c", ORIGIN).status, 404);
        let r = site.render("/robots.txt", ORIGIN);
        assert_eq!((r.status, r.content_type.as_str()), (200, TEXT));
        let red = site.render("/old", ORIGIN);
        assert_eq!(red.status, 301);
        assert_eq!(
            red.headers,
            vec![("Location".to_string(), "/a".to_string())]
        );
        assert_eq!(site.generated_pages(), 0);
    }
}
