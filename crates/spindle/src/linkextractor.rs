//! Link and field extraction in one streaming pass over a page (lol_html).
//!
//! lol_html tokenizes the bytes as they are, in the page's charset, without
//! building a DOM, so a page costs one linear pass and little memory however
//! large or deeply nested it is. The same pass collects the text of the
//! first element each field selector matches, attribute values
//! ([`LinkExtractor::with_attr_field`]), and can keep only the links inside
//! given regions ([`LinkExtractor::restrict`], Scrapy's `restrict_css`).

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;

use lol_html::html_content::{Element, EndTag, TextChunk};
use lol_html::{AsciiCompatibleEncoding, ElementContentHandlers, HtmlRewriter, Selector, Settings};
use url::Url;

use crate::request::check_crawlable;

mod fast;

/// URLs longer than this are skipped: no server serves them and they only cost memory.
pub const MAX_URL_LEN: usize = 8 * 1024;

/// A field selector that is not valid CSS.
#[derive(Debug, thiserror::Error)]
#[error("invalid CSS selector `{selector}` for field `{field}`: {reason}")]
pub struct FieldSelectorError {
    /// The field's name.
    pub field: String,
    /// The selector as given.
    pub selector: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Extracts links, and optionally named fields, from HTML.
#[derive(Clone, Default)]
pub struct LinkExtractor {
    fields: Vec<(String, Selector)>,
    attr_fields: Vec<AttrField>,
    /// Regions links must be inside; empty means the whole page.
    restrict: Vec<Selector>,
    /// Which tags and attributes hold links; `None` is Scrapy's default, `a` and `area` `href`s.
    link_sources: Option<(Selector, Vec<String>)>,
    /// The tags of `link_sources`, lowercase.
    link_tags: Vec<String>,
    /// How many text fields select something other than `title` (those need lol_html).
    other_fields: usize,
}

#[derive(Clone)]
struct AttrField {
    name: String,
    selector: Selector,
    attr: String,
    all: bool,
}

/// What one page yielded.
#[derive(Debug, Default, PartialEq)]
pub struct Extracted {
    /// Absolute http(s) links in document order (duplicates kept; the scheduler drops them).
    pub links: Vec<Url>,
    /// Each field's trimmed text, `None` when its selector matched nothing.
    pub fields: Vec<(String, Option<String>)>,
    /// `href`s that were not followable: other schemes, malformed, or too long.
    pub skipped_links: usize,
    /// Each attribute field's values in document order (only the first unless it takes all);
    /// `href` and `src` values joined to the page's base URL.
    pub attr_fields: Vec<(String, Vec<String>)>,
}

#[derive(Default)]
struct FieldCapture {
    text: String,
    capturing: bool,
    matched: bool,
    done: bool,
}

#[derive(Default)]
struct State {
    base: Option<Url>,
    saw_base: bool,
    links: Vec<Url>,
    skipped: usize,
    fields: Vec<FieldCapture>,
    attr_values: Vec<Vec<String>>,
    /// How many restricting regions the parser is inside.
    in_region: usize,
}

impl LinkExtractor {
    /// An extractor of links only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a field: the trimmed text of the first element `css` matches.
    pub fn with_field(mut self, name: &str, css: &str) -> Result<Self, FieldSelectorError> {
        let selector = css.parse::<Selector>().map_err(|e| FieldSelectorError {
            field: name.to_string(),
            selector: css.to_string(),
            reason: e.to_string(),
        })?;
        if !css.trim().eq_ignore_ascii_case("title") {
            self.other_fields += 1;
        }
        self.fields.push((name.to_string(), selector));
        Ok(self)
    }

    /// Adds an attribute field: the value of attribute `attr` of the first element `css` matches
    /// (of every one with `all`), as parsel's `css("SEL::attr(NAME)")`. Values of `href` and
    /// `src` are made absolute against the page's base URL.
    pub fn with_attr_field(
        mut self,
        name: &str,
        css: &str,
        attr: &str,
        all: bool,
    ) -> Result<Self, FieldSelectorError> {
        let selector = css.parse::<Selector>().map_err(|e| FieldSelectorError {
            field: name.to_string(),
            selector: css.to_string(),
            reason: e.to_string(),
        })?;
        self.attr_fields.push(AttrField {
            name: name.to_string(),
            selector,
            attr: attr.to_ascii_lowercase(),
            all,
        });
        Ok(self)
    }

    /// Keeps only the links inside an element `css` matches (the element itself included);
    /// repeatable, a link inside any region is kept. Scrapy's `restrict_css`.
    pub fn restrict(mut self, css: &str) -> Result<Self, FieldSelectorError> {
        let selector = css.parse::<Selector>().map_err(|e| FieldSelectorError {
            field: "restrict".to_string(),
            selector: css.to_string(),
            reason: e.to_string(),
        })?;
        self.restrict.push(selector);
        Ok(self)
    }

    /// Takes links from these tags' attributes instead of `<a href>` and `<area href>`
    /// (Scrapy's `LinkExtractor(tags=..., attrs=...)`), e.g. `(["a", "link"], ["href"])`.
    /// Names are letters, digits, `-` and `_`; neither list may be empty.
    pub fn link_sources(
        mut self,
        tags: &[String],
        attrs: &[String],
    ) -> Result<Self, FieldSelectorError> {
        let bad = |what: &str, reason: &str| FieldSelectorError {
            field: what.to_string(),
            selector: format!("tags {tags:?}, attributes {attrs:?}"),
            reason: reason.to_string(),
        };
        let name_ok = |n: &String| {
            !n.is_empty()
                && n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if tags.is_empty() || attrs.is_empty() {
            return Err(bad("links", "give at least one tag and one attribute"));
        }
        if !tags.iter().chain(attrs).all(name_ok) {
            return Err(bad("links", "names are letters, digits, `-` and `_`"));
        }
        let css = tags
            .iter()
            .flat_map(|t| attrs.iter().map(move |a| format!("{t}[{a}]")))
            .collect::<Vec<_>>()
            .join(", ");
        let selector = css
            .parse::<Selector>()
            .map_err(|e| bad("links", &e.to_string()))?;
        let attrs = attrs.iter().map(|a| a.to_ascii_lowercase()).collect();
        self.link_sources = Some((selector, attrs));
        self.link_tags = tags.iter().map(|t| t.to_ascii_lowercase()).collect();
        Ok(self)
    }

    /// The names of the text fields, in the order they were added.
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|(n, _)| n.as_str())
    }

    /// The names of the attribute fields, in the order they were added.
    pub fn attr_field_names(&self) -> impl Iterator<Item = &str> {
        self.attr_fields.iter().map(|f| f.name.as_str())
    }

    /// Extracts from `body`, resolving links against `page_url` (or the page's `<base href>`).
    pub fn extract(&self, body: &[u8], page_url: &Url, charset: Option<&str>) -> Extracted {
        self.extract_fast(body, page_url, charset)
            .unwrap_or_else(|| self.extract_lol_html(body, page_url, charset))
    }

    /// The scanner's plan, when this extractor asks only for what it does (links, `<base>`,
    /// `<title>` fields) and the page is UTF-8.
    fn fast_plan(&self, charset: Option<&str>) -> Option<fast::Plan> {
        if !self.restrict.is_empty() || !self.attr_fields.is_empty() || self.other_fields > 0 {
            return None;
        }
        if let Some(label) = charset {
            let named = encoding_rs::Encoding::for_label(label.as_bytes())
                .and_then(AsciiCompatibleEncoding::new);
            if named.is_some_and(|e| e != AsciiCompatibleEncoding::utf_8()) {
                return None;
            }
        }
        let (tags, attrs) = match &self.link_sources {
            Some((_, attrs)) => (self.link_tags.clone(), attrs.clone()),
            None => (
                vec!["a".to_string(), "area".to_string()],
                vec!["href".to_string()],
            ),
        };
        Some(fast::Plan {
            tags,
            attrs,
            title: !self.fields.is_empty(),
            meta_adjust: charset.is_none(),
        })
    }

    /// The byte scanner's pass; `None` when the page or the extractor needs lol_html.
    fn extract_fast(
        &self,
        body: &[u8],
        page_url: &Url,
        charset: Option<&str>,
    ) -> Option<Extracted> {
        let plan = self.fast_plan(charset)?;
        let html = std::str::from_utf8(body).ok()?;
        let mut base = Some(page_url.clone());
        let (mut links, mut skipped): (Vec<Url>, usize) = (Vec::new(), 0);
        // A page repeats many of its hrefs (menus, sidebars): each raw href is joined once,
        // and a repeat clones the first one's result (where it is in `links`, or `None` for
        // a skipped one). Keyed by the href's xxh3, checked against the href itself.
        let mut seen: HashMap<u64, (&str, Option<usize>), BuildHasherDefault<Prehashed>> =
            HashMap::default();
        let scanned = fast::scan(html, &plan, |event| match event {
            fast::Event::Base(href) => {
                if let Ok(b) = page_url.join(decode(href).trim()) {
                    base = Some(b);
                }
                seen.clear();
            }
            fast::Event::Link(href) => {
                let key = xxhash_rust::xxh3::xxh3_64(href.as_bytes());
                if let Some(&(raw, at)) = seen.get(&key) {
                    if raw == href {
                        match at {
                            Some(i) => links.push(links[i].clone()),
                            None => skipped += 1,
                        }
                        return;
                    }
                }
                let at = match resolve_link(base.as_ref(), href) {
                    Some(url) => {
                        links.push(url);
                        Some(links.len() - 1)
                    }
                    None => {
                        skipped += 1;
                        None
                    }
                };
                seen.insert(key, (href, at));
            }
        })
        .ok()?;
        let title = scanned.title.map(|t| decode(t.trim()).trim().to_string());
        Some(Extracted {
            links,
            skipped_links: skipped,
            attr_fields: Vec::new(),
            fields: self
                .fields
                .iter()
                .map(|(name, _)| (name.clone(), title.clone()))
                .collect(),
        })
    }

    /// The lol_html pass: everything the extractor can ask for, in any ASCII-compatible charset.
    fn extract_lol_html(&self, body: &[u8], page_url: &Url, charset: Option<&str>) -> Extracted {
        let state = Rc::new(RefCell::new(State {
            base: Some(page_url.clone()),
            fields: self
                .fields
                .iter()
                .map(|_| FieldCapture::default())
                .collect(),
            attr_values: vec![Vec::new(); self.attr_fields.len()],
            ..State::default()
        }));
        let restricted = !self.restrict.is_empty();
        let (link_selector, link_attrs) = match &self.link_sources {
            Some((selector, attrs)) => (Cow::Borrowed(selector), attrs.clone()),
            None => (
                Cow::Owned("a[href], area[href]".parse().expect("static selector")),
                vec!["href".to_string()],
            ),
        };
        let base_selector: Selector = "base[href]".parse().expect("static selector");

        let mut handlers: Vec<(Cow<'_, Selector>, ElementContentHandlers<'_>)> = Vec::new();
        let s = state.clone();
        handlers.push((
            Cow::Owned(base_selector),
            ElementContentHandlers::default().element(move |el: &mut Element| {
                let mut st = s.borrow_mut();
                if !st.saw_base {
                    st.saw_base = true;
                    if let Some(href) = el.get_attribute("href") {
                        if let Ok(base) = page_url.join(decode(&href).trim()) {
                            st.base = Some(base);
                        }
                    }
                }
                Ok(())
            }),
        ));
        // Regions come before links, so a link that is itself a region counts as inside it.
        for selector in &self.restrict {
            let s = state.clone();
            handlers.push((
                Cow::Borrowed(selector),
                ElementContentHandlers::default().element(move |el: &mut Element| {
                    let on_end = s.clone();
                    if let Some(end) = el.end_tag_handlers() {
                        s.borrow_mut().in_region += 1;
                        end.push(Box::new(move |_: &mut EndTag| {
                            let mut st = on_end.borrow_mut();
                            st.in_region = st.in_region.saturating_sub(1);
                            Ok(())
                        }));
                    }
                    Ok(())
                }),
            ));
        }
        for (i, field) in self.attr_fields.iter().enumerate() {
            let s = state.clone();
            let (attr, all) = (field.attr.clone(), field.all);
            handlers.push((
                Cow::Borrowed(&field.selector),
                ElementContentHandlers::default().element(move |el: &mut Element| {
                    let mut st = s.borrow_mut();
                    if !all && !st.attr_values[i].is_empty() {
                        return Ok(());
                    }
                    if let Some(value) = el.get_attribute(&attr) {
                        let value = decode(&value).into_owned();
                        let value = if attr == "href" || attr == "src" {
                            match st.base.as_ref().and_then(|b| b.join(value.trim()).ok()) {
                                Some(url) => url.into(),
                                None => value,
                            }
                        } else {
                            value
                        };
                        st.attr_values[i].push(value);
                    }
                    Ok(())
                }),
            ));
        }
        let s = state.clone();
        handlers.push((
            link_selector,
            ElementContentHandlers::default().element(move |el: &mut Element| {
                if let Some(href) = link_attrs.iter().find_map(|a| el.get_attribute(a)) {
                    let mut st = s.borrow_mut();
                    if restricted && st.in_region == 0 {
                        return Ok(());
                    }
                    match resolve_link(st.base.as_ref(), &href) {
                        Some(url) => st.links.push(url),
                        None => st.skipped += 1,
                    }
                }
                Ok(())
            }),
        ));
        for (i, (_, selector)) in self.fields.iter().enumerate() {
            let on_element = state.clone();
            let on_text = state.clone();
            handlers.push((
                Cow::Borrowed(selector),
                ElementContentHandlers::default()
                    .element(move |el: &mut Element| {
                        let mut st = on_element.borrow_mut();
                        let field = &mut st.fields[i];
                        if field.matched {
                            // A second match while the first never closed (no end tag
                            // seen): the first element's text is complete.
                            field.capturing = false;
                            field.done = true;
                            return Ok(());
                        }
                        field.matched = true;
                        field.capturing = true;
                        let on_end = on_element.clone();
                        match el.end_tag_handlers() {
                            Some(end) => end.push(Box::new(move |_: &mut EndTag| {
                                let mut st = on_end.borrow_mut();
                                st.fields[i].capturing = false;
                                st.fields[i].done = true;
                                Ok(())
                            })),
                            None => {
                                // A void element has no text.
                                field.capturing = false;
                                field.done = true;
                            }
                        }
                        Ok(())
                    })
                    .text(move |t: &mut TextChunk| {
                        let mut st = on_text.borrow_mut();
                        let field = &mut st.fields[i];
                        if field.capturing && !field.done {
                            field.text.push_str(t.as_str());
                        }
                        Ok(())
                    }),
            ));
        }

        let encoding = charset
            .and_then(|c| encoding_rs::Encoding::for_label(c.as_bytes()))
            .and_then(AsciiCompatibleEncoding::new)
            .unwrap_or_else(AsciiCompatibleEncoding::utf_8);
        // A `<meta charset>` switches the decoding when no header named one.
        let settings = handlers
            .into_iter()
            .fold(Settings::new(), Settings::append_element_content_handler)
            .with_encoding(encoding)
            .with_adjust_charset_on_meta_tag(charset.is_none());
        let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
        // A parse error ends the pass early; what was found up to it is kept.
        // The rewriter holds the handlers' references to the state: it must be gone (`end`
        // consumes it) before the state is taken back, on the error path too.
        match rewriter.write(body) {
            Ok(()) => {
                let _ = rewriter.end();
            }
            Err(_) => drop(rewriter),
        }

        let st = Rc::try_unwrap(state)
            .ok()
            .expect("handlers dropped with the rewriter")
            .into_inner();
        Extracted {
            links: st.links,
            skipped_links: st.skipped,
            attr_fields: self
                .attr_fields
                .iter()
                .map(|f| f.name.clone())
                .zip(st.attr_values)
                .collect(),
            fields: self
                .fields
                .iter()
                .zip(st.fields)
                .map(|((name, _), f)| {
                    let text = f.matched.then(|| decode(f.text.trim()).trim().to_string());
                    (name.clone(), text)
                })
                .collect(),
        }
    }
}

/// The hasher of keys that are already hashes.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

fn decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('&') {
        html_escape::decode_html_entities(raw)
    } else {
        Cow::Borrowed(raw)
    }
}

/// The absolute URL an `href` leads to, if it is one the crawler can follow.
fn resolve_link(base: Option<&Url>, href: &str) -> Option<Url> {
    let href = decode(href);
    let href = href.trim();
    if href.is_empty() || href.len() > MAX_URL_LEN {
        return None;
    }
    let url = base?.join(href).ok()?;
    (check_crawlable(&url).is_ok() && url.as_str().len() <= MAX_URL_LEN).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Url {
        Url::parse("http://e.test/dir/page.html").unwrap()
    }

    #[test]
    fn resolves_relative_links_and_skips_unfollowable() {
        let html = br#"<html><body>
            <a href="/a">A</a><a href="b?x=1&amp;y=2">B</a><a href="http://other.test/c#f">C</a>
            <a href="javascript:void(0)">J</a><a href="mailto:x@y.z">M</a><a href="">E</a>
            <a name="no-href">N</a><map><area href="/area"></map><a href="http://[bad">X</a>
        </body></html>"#;
        let out = LinkExtractor::new().extract(html, &page(), None);
        let links: Vec<&str> = out.links.iter().map(Url::as_str).collect();
        assert_eq!(
            links,
            [
                "http://e.test/a",
                "http://e.test/dir/b?x=1&y=2",
                "http://other.test/c#f",
                "http://e.test/area"
            ]
        );
        assert_eq!(out.skipped_links, 4);
    }

    #[test]
    fn honours_base_href() {
        let html = br#"<head><base href="http://cdn.test/root/"></head><a href="x">x</a>"#;
        let out = LinkExtractor::new().extract(html, &page(), None);
        assert_eq!(out.links[0].as_str(), "http://cdn.test/root/x");
    }

    #[test]
    fn fields_take_the_first_match_trimmed_with_nested_text() {
        let html = br#"<title> The &amp; Title </title>
            <p class="price">  <b>12</b>.99 &euro; </p><p class="price">99</p>"#;
        let ex = LinkExtractor::new()
            .with_field("title", "title")
            .unwrap()
            .with_field("price", ".price")
            .unwrap()
            .with_field("missing", "h6")
            .unwrap();
        let out = ex.extract(html, &page(), None);
        assert_eq!(
            out.fields,
            [
                ("title".to_string(), Some("The & Title".to_string())),
                ("price".to_string(), Some("12.99 €".to_string())),
                ("missing".to_string(), None),
            ]
        );
    }

    #[test]
    fn attr_fields_are_absolute_and_restrict_keeps_links_in_regions() {
        let html = br#"<img src="/logo.png"><nav><a href="/n1">n</a><a href="n2">n</a></nav>
            <a class="x" href="/out" data-id="7">o</a><a class="x" href="/out2" data-id="8">o</a>"#;
        let ex = LinkExtractor::new()
            .with_attr_field("img", "img", "src", false)
            .unwrap()
            .with_attr_field("ids", "a.x", "data-id", true)
            .unwrap()
            .with_attr_field("first", "a", "href", false)
            .unwrap()
            .restrict("nav")
            .unwrap()
            .restrict("a[data-id='8']")
            .unwrap();
        let out = ex.extract(html, &page(), None);
        let links: Vec<&str> = out.links.iter().map(Url::as_str).collect();
        assert_eq!(
            links,
            [
                "http://e.test/n1",
                "http://e.test/dir/n2",
                "http://e.test/out2"
            ]
        );
        assert_eq!(
            out.attr_fields,
            [
                (
                    "img".to_string(),
                    vec!["http://e.test/logo.png".to_string()]
                ),
                ("ids".to_string(), vec!["7".to_string(), "8".to_string()]),
                ("first".to_string(), vec!["http://e.test/n1".to_string()]),
            ]
        );
    }

    #[test]
    fn links_from_other_tags_and_attributes() {
        let html = br#"<a href="/a">a</a><link rel="next" href="/next"><div data-url="/d"></div>"#;
        let tags = ["link".to_string(), "div".to_string()];
        let attrs = ["href".to_string(), "data-url".to_string()];
        let out = LinkExtractor::new()
            .link_sources(&tags, &attrs)
            .unwrap()
            .extract(html, &page(), None);
        let links: Vec<&str> = out.links.iter().map(Url::as_str).collect();
        assert_eq!(links, ["http://e.test/next", "http://e.test/d"]);
        assert!(LinkExtractor::new().link_sources(&tags, &[]).is_err());
        assert!(LinkExtractor::new()
            .link_sources(&["a]".to_string()], &attrs)
            .is_err());
    }

    #[test]
    fn bad_selector_names_the_field() {
        let err = LinkExtractor::new().with_field("t", "p[").err().unwrap();
        assert!(err.to_string().contains("`t`"), "{err}");
    }

    #[test]
    fn other_charsets_and_invalid_bytes() {
        // "é" in windows-1252 is 0xE9; the link must survive it.
        let html = b"<p>caf\xe9</p><a href=\"/menu\">m</a>";
        let ex = LinkExtractor::new().with_field("p", "p").unwrap();
        let out = ex.extract(html, &page(), Some("windows-1252"));
        assert_eq!(out.fields[0].1.as_deref(), Some("café"));
        assert_eq!(out.links.len(), 1);
        let out = ex.extract(html, &page(), None);
        assert_eq!(out.links.len(), 1, "invalid UTF-8 does not stop extraction");
    }

    /// The scanner, where it does not give up, finds what lol_html finds.
    fn same(html: &[u8], ex: &LinkExtractor, charset: Option<&str>) -> bool {
        let slow = ex.extract_lol_html(html, &page(), charset);
        match ex.extract_fast(html, &page(), charset) {
            Some(fast) => {
                assert_eq!(fast, slow, "on {:?}", String::from_utf8_lossy(html));
                true
            }
            None => false,
        }
    }

    fn title_extractor() -> LinkExtractor {
        LinkExtractor::new().with_field("title", "title").unwrap()
    }

    #[test]
    fn scanner_agrees_with_lol_html_on_edge_cases() {
        let cases: &[&str] = &[
            r#"<html><head><title> A &amp; B </title></head><body><a href="/x">x</a></body>"#,
            r#"<a href=/unq>u</a><a href='/sq'>s</a><a HREF="/upper">U</a><A href="/A">"#,
            r#"<a href="/1" href="/2"><a x href><a href = " /sp ">"#,
            r#"<a data-x="<a href='/no'>" href="/yes">"#,
            r#"<!-- <a href="/c1"> --><a href="/after-comment"><!--> <a href="/e1"><!---> <a href="/e2">"#,
            r#"<!-- a --!> <a href="/bang"> <!-- <!-- x --> <a href="/n"> <!---- x ---> <a href="/m">"#,
            r#"<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0//EN" "x"><a href="/dt">"#,
            r#"<!DOCTYPE html "a>b"><a href="/dt2">"#,
            r#"<? pi <a href="/pi"> ?><a href="/after-pi"></ bogus <a href="/b"> ><a href="/c"></>"#,
            r#"<![CDATA[ <a href="/cd"> ]]><a href="/after-cdata">"#,
            r#"<script>var a = "<a href='/s'>"; if (a</b) {}</script><a href="/after-script">"#,
            r#"<script>x</scriptx></script ><a href="/s2"><SCRIPT>y</Script/><a href="/s3">"#,
            r#"<script><!-- <script> </script> --></script><a href="/esc">"#,
            r#"<style><a href="/st"></style><a href="/after-style"><noscript><a href="/ns"></noscript>"#,
            r#"<textarea><a href="/ta"></textarea><xmp><a href="/x"></xmp><iframe><a href="/if"></iframe><a href="/ok">"#,
            r#"<title>T1</title><title>T2</title><a href="/t">"#,
            r#"<title>no end <a href="/in-title">"#,
            r#"<title/>after<a href="/x">"#,
            r#"<svg><a href="/svg-a"></a></svg><a href="/after-svg">"#,
            r#"<svg><p><a href="/p-exit"></svg><svg/><a href="/sc">"#,
            r#"<svg><title>t</title></svg><a href="/x">"#,
            r#"<svg><style><a href="/svgstyle"></style></svg><svg><![CDATA[<a href="/cd">]]></svg>"#,
            r#"<math><mi><a href="/m"></mi></math>"#,
            r#"<select><option><a href="/sel"></select><a href="/after-select">"#,
            r#"<select><title>x</title></select>"#,
            r#"<frameset><noframes><a href="/nf"></noframes></frameset>"#,
            r#"<base href="http://cdn.test/r/"><base href="http://other.test/"><a href="rel">"#,
            r#"<a href="a"><base href="/b/"><a href="c">"#,
            r#"<a href="x"><a href="x"><a href="?"><base href="/b/"><a href="x"><a href="mailto:m"><a href="mailto:m">"#,
            r#"<base target=_blank><base href="/second/"><a href="z">"#,
            r#"<meta charset="utf-8"><a href="/é">"#,
            r#"<meta charset="windows-1252"><a href="/é">"#,
            r#"<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"><a href="/é">"#,
            r#"<meta http-equiv="Content-Type" content="text/html; charset=utf-8"><a href="/é">"#,
            r#"<a href="javascript:x"><a href="mailto:x"><a href=""><a href="http://[bad"><area href="/ar">"#,
            r#"<a/href="/slash"><a href="/q"/><a href="/r"x=y><a =href="/eq"><a href=/u>"#,
            r#"<a href=x=>z<a href="/after-quirk">"#,
            r#"<p>1 < 2 <a href="/lt"> a<b <<a href="/double"></p>"#,
            r#"<plaintext><a href="/pt">"#,
            r#"<a href="/unterminated"#,
            r#"<a href="/x">"#,
            "<a\thref\n=\r'/ws'\x0c>",
            r#"<div><a href="/d&amp;x?a=1&b=2#f">&lt;</a></div>"#,
            r#"<title>a</title  foo=">"><a href="/end-attrs">"#,
            r#"<title>x</titlex></title><a href="/t2">"#,
            "",
            "<",
            "</",
            "<!",
            "<!--",
            "<title>",
        ];
        let plain = LinkExtractor::new();
        let titled = title_extractor();
        let custom = LinkExtractor::new()
            .link_sources(
                &["link".into(), "A".into(), "iframe".into()],
                &["src".into(), "href".into()],
            )
            .unwrap();
        let mut fast = 0;
        for case in cases {
            for ex in [&plain, &titled, &custom] {
                for charset in [None, Some("utf-8"), Some("iso-8859-1")] {
                    fast += same(case.as_bytes(), ex, charset) as usize;
                }
            }
        }
        assert!(
            fast > cases.len() * 3,
            "the scanner gave up too often: {fast}"
        );
    }

    #[test]
    fn scanner_agrees_with_lol_html_on_random_markup() {
        use rand::{Rng, SeedableRng};
        let pieces: &[&str] = &[
            "<a href=\"/a\">",
            "<a href='b'>",
            "<a href=c>",
            "<A HREF=\"/D\">",
            "<area href=/e>",
            "</a>",
            "<title>",
            "</title>",
            "</title",
            "<base href=\"/base/\">",
            "<script>",
            "</script>",
            "<style>",
            "</style>",
            "<svg>",
            "</svg>",
            "<p>",
            "</p>",
            "<br>",
            "<!--",
            "-->",
            "--!>",
            "<!",
            "<!DOCTYPE html>",
            "<?",
            ">",
            "<",
            "/",
            "\"",
            "'",
            "=",
            " ",
            "\n",
            "text",
            "&amp;",
            "<div class=\"x\">",
            "</div>",
            "<textarea>",
            "</textarea>",
            "<select>",
            "</select>",
            "<template>",
            "</template>",
            "<meta charset=utf-8>",
            "<b>",
            "</",
            "<a",
            " href",
            "=\"/z\"",
            "<noscript>",
            "</noscript>",
            "<![CDATA[",
            "]]>",
            "<plaintext>",
            "é",
            "<a href=\"/é?q=1&amp;r=2#x\">",
            "<img src=x>",
            "/>",
        ];
        let titled = title_extractor();
        let plain = LinkExtractor::new();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(15);
        let mut fast = 0;
        for _ in 0..20_000 {
            let len = rng.gen_range(1..40);
            let html: String = (0..len)
                .map(|_| pieces[rng.gen_range(0..pieces.len())])
                .collect();
            fast += same(html.as_bytes(), &titled, None) as usize;
            same(html.as_bytes(), &plain, Some("utf-8"));
        }
        assert!(fast > 5_000, "the scanner gave up too often: {fast}");
    }

    /// `SPINDLE_HTML_CORPUS=/usr/share/doc/python3.11/html cargo test -p spindle --release
    /// scanner_agrees_on_a_corpus -- --ignored`: every `.html` file under the directory.
    #[test]
    #[ignore]
    fn scanner_agrees_on_a_corpus() {
        let root = std::env::var("SPINDLE_HTML_CORPUS").expect("SPINDLE_HTML_CORPUS");
        let ex = title_extractor();
        let (mut pages, mut fast) = (0, 0);
        let mut dirs = vec![std::path::PathBuf::from(root)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "html") {
                    let body = std::fs::read(&path).unwrap();
                    pages += 1;
                    fast += same(&body, &ex, None) as usize;
                }
            }
        }
        eprintln!("{pages} pages, {fast} by the scanner");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut html = "<div>".repeat(200_000);
        html.push_str("<a href=\"/deep\">d</a>");
        let out = LinkExtractor::new().extract(html.as_bytes(), &page(), None);
        assert_eq!(out.links.len(), 1);
    }
}
