//! A parsed page, and the base URL its links resolve against.

use std::cell::OnceCell;

use url::Url;

/// A parsed HTML page that [`Selector`](super::Selector)s run on.
///
/// The page is parsed once with html5ever, the WHATWG algorithm browsers use, so the tree is the one a
/// browser's developer tools show (with the `<tbody>` a browser inserts, which lxml, and so parsel,
/// leaves out), except that `<noscript>` content is parsed as elements, as by a browser with
/// scripting off and by lxml. XPath runs on a copy of that tree made on the first XPath query and kept for the next.
///
/// A `Document` is neither `Send` nor `Sync`: html5ever's strings and the XPath tree use non-atomic
/// reference counts. Parse it on the thread that queries it, for example inside `Spider::parse`; the
/// [`Response`](crate::Response) that carries the bytes is what crosses threads.
pub struct Document {
    html: scraper::Html,
    base: Option<Url>,
    xpath_tree: OnceCell<sxd_document::Package>,
}

impl Document {
    /// Parses `html`. `url` is the page's own URL; a `<base href>` in the page overrides it as the base
    /// for relative links, as in a browser and in Scrapy's `response.urljoin`.
    pub fn parse(html: &str, url: Option<&Url>) -> Self {
        let html = parse_without_scripting(html);
        let base = base_url(&html, url);
        Document {
            html,
            base,
            xpath_tree: OnceCell::new(),
        }
    }

    /// The URL relative links resolve against: the first `<base href>` (made absolute against the page
    /// URL), else the page URL.
    pub fn base_url(&self) -> Option<&Url> {
        self.base.as_ref()
    }

    /// `link` made absolute against [`base_url`](Self::base_url), like Scrapy's `response.urljoin`.
    /// `None` when there is no base and `link` is not absolute itself, or when it is not a valid URL.
    pub fn urljoin(&self, link: &str) -> Option<Url> {
        match &self.base {
            Some(base) => base.join(link).ok(),
            None => Url::parse(link).ok(),
        }
    }

    /// The html5ever tree, for queries the selector syntax cannot express.
    pub fn html(&self) -> &scraper::Html {
        &self.html
    }

    pub(super) fn xpath_tree(&self) -> &sxd_document::Package {
        self.xpath_tree
            .get_or_init(|| super::xpath::build_tree(&self.html))
    }
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("base", &self.base.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

/// Parses as a browser with scripting off: spindle runs no scripts, so `<noscript>` content is the
/// page it sees, and lxml (parsel's parser) reads it as elements too. scraper's own
/// `Html::parse_document` parses with scripting on, which makes that content one text node.
fn parse_without_scripting(html: &str) -> scraper::Html {
    use html5ever::tendril::TendrilSink;
    let opts = html5ever::ParseOpts {
        tree_builder: html5ever::tree_builder::TreeBuilderOpts {
            scripting_enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let sink = scraper::HtmlTreeSink::new(scraper::Html::new_document());
    html5ever::parse_document(sink, opts).one(html)
}

/// The HTML standard's rule: the first `base` element that has an `href` counts; one whose `href`
/// does not parse leaves the page URL in force.
fn base_url(html: &scraper::Html, url: Option<&Url>) -> Option<Url> {
    let href = html.tree.root().descendants().find_map(|node| {
        let el = node.value().as_element()?;
        (el.name() == "base").then(|| el.attr("href")).flatten()
    });
    let Some(href) = href else {
        return url.cloned();
    };
    let joined = match url {
        Some(url) => url.join(href.trim()),
        None => Url::parse(href.trim()),
    };
    joined.ok().or_else(|| url.cloned())
}
