//! Selectors with parsel's syntax (the selector library Scrapy uses), for spiders that parse a page
//! themselves.
//!
//! One [`Selector`] type takes both languages, told apart as parsel users write them:
//! - **XPath 1.0**, plus parsel's `has-class()`, when the text starts with `/`, `./`, `../`, `(`
//!   or a function call (`//a/@href`, `(//a)[2]/@href`, `normalize-space(//title)`, `count(//a)`);
//! - **CSS** otherwise, with parsel's pseudo-elements: `h1::text` is the `<h1>`'s own text nodes (a
//!   nested `<a>`'s text left out), `h1 ::text` and `*::text` every text node under the match, and
//!   `a::attr(href)` an attribute's value.
//!
//! Values come out as parsel's `getall()` gives them, in document order, with two deliberate
//! differences:
//! - a match that is an element (a CSS selector without a pseudo-element, or an XPath step ending
//!   on elements) yields the element's whole text, trimmed: the rule of spindle's `--field`. parsel
//!   yields the element's HTML instead;
//! - the page is parsed by html5ever as a browser parses it, so the tree has what browsers add,
//!   such as `<tbody>` inside a `<table>` written without one, where lxml's tree, and so parsel's,
//!   has none. `//table/tr` matches nothing here; `//table//tr` matches in both.
//!
//! Links are returned as written unless [`Selector::absolute`] is set, which resolves the values of
//! `href` and `src` attributes against the page's base URL, as `response.urljoin` does in Scrapy.
//!
//! ```
//! use spindle::selector::{Document, Selector};
//! use url::Url;
//!
//! let page = Url::parse("http://example.com/a/").unwrap();
//! let doc = Document::parse(r#"<h1>Hi <a href="next">there</a></h1>"#, Some(&page));
//! assert_eq!(Selector::parse("h1::text").unwrap().getall(&doc), ["Hi "]);
//! assert_eq!(Selector::parse("//a/@href").unwrap().get(&doc).as_deref(), Some("next"));
//! let links = Selector::parse("a::attr(href)").unwrap().absolute(true);
//! assert_eq!(links.getall(&doc), ["http://example.com/a/next"]);
//! ```

#![warn(missing_docs)]

mod css;
mod document;
mod xpath;

use std::fmt;
use std::str::FromStr;

pub use document::Document;

/// Why a selector's text is not a selector. The message names the selector and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The text was empty or only whitespace.
    #[error("empty selector")]
    Empty,
    /// Not valid CSS, or a pseudo-element other than `::text` and `::attr(NAME)`.
    #[error("invalid CSS selector `{selector}`: {reason}")]
    Css {
        /// The selector as given.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Not valid XPath 1.0, or a call to a function that is not supported.
    #[error("invalid XPath `{selector}`: {reason}")]
    XPath {
        /// The selector as given.
        selector: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A compiled CSS or XPath selector. It is `Send + Sync` and cheap to clone, so one compiled
/// selector can serve every parse thread.
#[derive(Clone, Debug)]
pub struct Selector {
    text: String,
    language: Language,
    absolute: bool,
}

#[derive(Clone, Debug)]
enum Language {
    Css(css::Css),
    XPath(xpath::XPath),
}

/// One selected value, and whether it is a link that [`Selector::absolute`] resolves.
struct Value {
    text: String,
    is_link: bool,
}

impl Value {
    fn text(text: String) -> Value {
        Value {
            text,
            is_link: false,
        }
    }

    fn attr(name: &str, value: &str) -> Value {
        Value {
            text: value.to_string(),
            is_link: name.eq_ignore_ascii_case("href") || name.eq_ignore_ascii_case("src"),
        }
    }
}

impl Selector {
    /// Compiles `text` as XPath when it starts as an XPath expression does (`/`, `./`, `../`, `(`,
    /// or a function call such as `normalize-space(`), and as CSS otherwise.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        if looks_like_xpath(text) {
            Selector::xpath(text)
        } else {
            Selector::css(text)
        }
    }

    /// Compiles `text` as CSS, with parsel's `::text` and `::attr(NAME)`.
    pub fn css(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector {
            text: text.to_string(),
            language: Language::Css(css::Css::compile(text)?),
            absolute: false,
        })
    }

    /// Compiles `text` as XPath 1.0.
    pub fn xpath(text: &str) -> Result<Selector, SelectorError> {
        Ok(Selector {
            text: text.to_string(),
            language: Language::XPath(xpath::XPath::compile(text)?),
            absolute: false,
        })
    }

    /// With `true`, values of `href` and `src` attributes come out as absolute URLs, joined to the
    /// document's [base URL](Document::base_url). A value that cannot be joined (no base and not
    /// absolute itself, or not a URL) comes out as written. Off by default: parsel returns links
    /// as written.
    pub fn absolute(mut self, yes: bool) -> Selector {
        self.absolute = yes;
        self
    }

    /// The selector's text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the selector was compiled as XPath.
    pub fn is_xpath(&self) -> bool {
        matches!(self.language, Language::XPath(_))
    }

    /// Every value the selector picks out of `doc`, in document order (parsel's `getall()`).
    pub fn select(&self, doc: &Document) -> Vec<String> {
        let values = match &self.language {
            Language::Css(css) => css.select(doc.html()),
            Language::XPath(xpath) => xpath.select(doc.xpath_tree()),
        };
        values
            .into_iter()
            .map(|v| match (self.absolute && v.is_link, &v.text) {
                (true, link) => doc
                    .urljoin(link)
                    .map_or_else(|| v.text.clone(), String::from),
                (false, _) => v.text,
            })
            .collect()
    }

    /// The first value, or `None` (parsel's `get()`).
    pub fn get(&self, doc: &Document) -> Option<String> {
        self.select(doc).into_iter().next()
    }

    /// Every value; the same as [`select`](Self::select), under parsel's name.
    pub fn getall(&self, doc: &Document) -> Vec<String> {
        self.select(doc)
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// parsel's users write XPath starting with a path or a parenthesis, or as a call such as
/// `normalize-space(//title)`; a CSS selector cannot start with `name(`.
fn looks_like_xpath(text: &str) -> bool {
    let t = text.trim_start();
    if t.starts_with('/') || t.starts_with("./") || t.starts_with("../") || t.starts_with('(') {
        return true;
    }
    let name_end = t
        .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(t.len());
    name_end > 0 && t[name_end..].trim_start().starts_with('(')
}
