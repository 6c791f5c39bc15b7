//! The selector module against parsel. Every expected value below was produced by parsel 1.x
//! (`parsel.Selector(text=PAGE).css(...)/.xpath(...).getall()`) on the same text, unless a comment
//! says the case is one where spindle differs on purpose.

use spindle::selector::{Document, Selector, SelectorError};
use url::Url;

const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>  The   Title
</title></head>
<body>
<h1>Hello <a href="/docs/">docs</a> world</h1>
<div class="links"><a href="one.html">One</a> <a href="https://other.example/two">Two</a><img src="i.png"></div>
<p>caf&eacute; &amp; more</p>
<table id="t"><tbody><tr><td>a</td><td>b</td></tr></tbody></table>
</body></html>"#;

fn doc() -> Document {
    Document::parse(PAGE, None)
}

fn all(selector: &str) -> Vec<String> {
    Selector::parse(selector).unwrap().getall(&doc())
}

#[test]
fn css_text_is_the_elements_own_text_nodes() {
    // parsel: ['Hello ', ' world'], the nested link's text left out.
    assert_eq!(all("h1::text"), ["Hello ", " world"]);
    // parsel: ['  The   Title\n'], untrimmed.
    assert_eq!(all("title::text"), ["  The   Title\n"]);
    // parsel: ['café & more'], entities decoded.
    assert_eq!(all("p::text"), ["café & more"]);
    // parsel: ['a', 'b'].
    assert_eq!(all("td::text"), ["a", "b"]);
}

#[test]
fn css_descendant_text() {
    // parsel: ['Hello ', 'docs', ' world'] for both spellings.
    assert_eq!(all("h1 ::text"), ["Hello ", "docs", " world"]);
    assert_eq!(all("h1 *::text"), ["Hello ", "docs", " world"]);
    // parsel: ['One', 'Two']: with `>` the `*` is a real child step.
    assert_eq!(all("div > *::text"), ["One", "Two"]);
    assert_eq!(all("div > ::text"), ["One", "Two"]);
}

#[test]
fn css_every_text_node() {
    let text = all("*::text");
    // parsel starts with the title's text and ends with the whitespace after the table.
    assert_eq!(text.first().map(String::as_str), Some("  The   Title\n"));
    assert!(text.iter().any(|t| t == "docs"));
    assert_eq!(all("::text"), text);
}

#[test]
fn css_attr() {
    // parsel: ['/docs/', 'one.html', 'https://other.example/two'].
    assert_eq!(
        all("a::attr(href)"),
        ["/docs/", "one.html", "https://other.example/two"]
    );
    // parsel: ['i.png'].
    assert_eq!(all("img::attr(src)"), ["i.png"]);
    // parsel: [] (attribute names are lower case in the tree).
    assert!(all("a::attr(HREF)").is_empty());
    // parsel: ['/docs/', 'one.html', 'https://other.example/two']: `a *` folds to a-or-under-a.
    assert_eq!(
        all("a *::attr(href)"),
        ["/docs/", "one.html", "https://other.example/two"]
    );
    // parsel: ['one.html', 'https://other.example/two'].
    assert_eq!(
        all("div *::attr(href)"),
        ["one.html", "https://other.example/two"]
    );
}

#[test]
fn css_group_comes_in_document_order() {
    // parsel: ['Hello ', '/docs/', ' world', 'one.html', 'https://other.example/two'].
    assert_eq!(
        all("h1::text, a::attr(href)"),
        [
            "Hello ",
            "/docs/",
            " world",
            "one.html",
            "https://other.example/two"
        ]
    );
}

#[test]
fn css_without_pseudo_element_is_the_trimmed_text() {
    // spindle's `--field` rule. parsel would give the elements' HTML,
    // ['<a href="/docs/">docs</a>', '<a href="one.html">One</a>', ...].
    assert_eq!(all("a"), ["docs", "One", "Two"]);
    assert_eq!(all("title"), ["The   Title"]);
}

#[test]
fn xpath_paths() {
    // parsel: ['/docs/', 'one.html', 'https://other.example/two'].
    assert_eq!(
        all("//a/@href"),
        ["/docs/", "one.html", "https://other.example/two"]
    );
    assert_eq!(all("//@href"), all("//a/@href"));
    // parsel: ['Hello ', ' world'].
    assert_eq!(all("//h1/text()"), ["Hello ", " world"]);
    // parsel: ['one.html'].
    assert_eq!(all("(//a)[2]/@href"), ["one.html"]);
    // parsel: ['a', 'b'].
    assert_eq!(all("//table//td/text()"), ["a", "b"]);
    // parsel: ['i.png'].
    assert_eq!(all("//img/@src"), ["i.png"]);
}

#[test]
fn xpath_functions() {
    // parsel: ['The Title'].
    assert_eq!(all("normalize-space(//title)"), ["The Title"]);
    // parsel: ['3.0'] (a Python float).
    assert_eq!(all("count(//a)"), ["3.0"]);
    // parsel: ['Hello docs world'].
    assert_eq!(all("string(//h1)"), ["Hello docs world"]);
    // parsel: ['0'].
    assert_eq!(all("boolean(//nope)"), ["0"]);
}

#[test]
fn xpath_elements_yield_trimmed_text() {
    // spindle's rule again; parsel: ['<a href="/docs/">docs</a>', '<a href="one.html">One</a>'].
    assert_eq!(all("//a[1]"), ["docs", "One"]);
}

#[test]
fn get_is_the_first_value_or_none() {
    let d = doc();
    let first = Selector::parse("a::attr(href)").unwrap().get(&d);
    assert_eq!(first.as_deref(), Some("/docs/"));
    assert_eq!(Selector::parse("h6::text").unwrap().get(&d), None);
}

#[test]
fn tbody_is_in_the_tree_as_in_a_browser() {
    // Differs from parsel on purpose: lxml gives ['a', 'b'] for this page without <tbody>;
    // html5ever inserts the <tbody>, as browsers do.
    let d = Document::parse("<table><tr><td>a</td><td>b</td></tr></table>", None);
    let direct = Selector::parse("//table/tr/td/text()").unwrap();
    assert!(direct.getall(&d).is_empty());
    let through = Selector::parse("//table/tbody/tr/td/text()").unwrap();
    assert_eq!(through.getall(&d), ["a", "b"]);
}

#[test]
fn language_is_told_by_the_first_characters() {
    for xpath in [
        "//a",
        "./a",
        "../a",
        "(//a)[1]",
        "normalize-space(//title)",
        "count(//a)",
    ] {
        assert!(Selector::parse(xpath).unwrap().is_xpath(), "{xpath}");
    }
    for css in ["a", "a::text", "div > p", ":is(a, b)", "*::text"] {
        assert!(!Selector::parse(css).unwrap().is_xpath(), "{css}");
    }
}

#[test]
fn invalid_css_says_what_is_wrong() {
    // parsel raises SelectorSyntaxError for `p[`, and ExpressionError for the pseudo-elements.
    let err = Selector::parse("p[").unwrap_err();
    assert!(matches!(err, SelectorError::Css { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("invalid CSS selector `p[`: "),
        "{err}"
    );

    let err = Selector::parse("a::foo").unwrap_err();
    assert!(
        err.to_string().contains("unknown pseudo-element `::foo`"),
        "{err}"
    );
    let err = Selector::parse("a::attr()").unwrap_err();
    assert!(
        err.to_string().contains("needs one attribute name"),
        "{err}"
    );
    assert_eq!(Selector::parse("  ").unwrap_err(), SelectorError::Empty);
}

#[test]
fn invalid_xpath_says_what_is_wrong() {
    // parsel: "XPath error: Invalid expression in //a[".
    let err = Selector::parse("//a[").unwrap_err();
    assert!(matches!(err, SelectorError::XPath { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("invalid XPath `//a[`: "),
        "{err}"
    );
    // parsel: "Unregistered function" for both, at compile time.
    let err = Selector::parse("foo(//a)").unwrap_err();
    assert!(
        err.to_string().contains("unknown function `foo()`"),
        "{err}"
    );
    let err = Selector::parse("//a[foo()]").unwrap_err();
    assert!(
        err.to_string().contains("unknown function `foo()`"),
        "{err}"
    );
    // A known function with the wrong arguments, caught by the check on an empty tree.
    let err = Selector::parse("count()").unwrap_err();
    assert!(matches!(err, SelectorError::XPath { .. }), "{err:?}");
}

#[test]
fn links_stay_as_written_unless_absolute() {
    let page = Url::parse("http://example.com/a/b.html").unwrap();
    let d = Document::parse(PAGE, Some(&page));
    let raw = Selector::parse("a::attr(href)").unwrap();
    // parsel (with base_url set): ['/docs/', 'one.html', 'https://other.example/two'].
    assert_eq!(
        raw.getall(&d),
        ["/docs/", "one.html", "https://other.example/two"]
    );
    // Scrapy's response.urljoin on each of those gives these.
    let absolute = raw.absolute(true);
    assert_eq!(
        absolute.getall(&d),
        [
            "http://example.com/docs/",
            "http://example.com/a/one.html",
            "https://other.example/two"
        ]
    );
    let src = Selector::parse("//img/@src").unwrap().absolute(true);
    assert_eq!(src.getall(&d), ["http://example.com/a/i.png"]);
    // Text is never joined, even when it looks like a path.
    let text = Selector::parse("//a/text()").unwrap().absolute(true);
    assert_eq!(text.getall(&d), ["docs", "One", "Two"]);
}

#[test]
fn base_href_wins_over_the_page_url() {
    let page = Url::parse("http://example.com/a/b.html").unwrap();
    let html =
        r#"<head><base href="/static/"><base href="/ignored/"></head><a href="x.html">x</a>"#;
    let d = Document::parse(html, Some(&page));
    assert_eq!(
        d.base_url().map(Url::as_str),
        Some("http://example.com/static/")
    );
    let links = Selector::parse("a::attr(href)").unwrap().absolute(true);
    assert_eq!(links.getall(&d), ["http://example.com/static/x.html"]);

    // The first <base> with an href counts, as in the HTML standard.
    let d = Document::parse(
        r#"<base target="_top"><base href="http://cdn.example/"><a href="y">"#,
        Some(&page),
    );
    assert_eq!(d.base_url().map(Url::as_str), Some("http://cdn.example/"));
}

#[test]
fn without_any_base_relative_links_stay_as_written() {
    let d = Document::parse(
        r#"<a href="rel.html"><a href="http://x.example/abs">"#,
        None,
    );
    assert_eq!(d.base_url(), None);
    let links = Selector::parse("//a/@href").unwrap().absolute(true);
    assert_eq!(links.getall(&d), ["rel.html", "http://x.example/abs"]);
}

#[test]
fn selectors_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync + Clone>(_: &T) {}
    let s = Selector::parse("//a/@href").unwrap();
    send_sync(&s);
    let got = std::thread::scope(|scope| {
        scope
            .spawn(|| s.getall(&Document::parse(PAGE, None)))
            .join()
            .unwrap()
    });
    assert_eq!(got.len(), 3);
}

#[test]
fn noscript_content_is_elements() {
    // parsel: ['Enable JavaScript']. A browser with scripting on would see one text node.
    let d = Document::parse(
        "<body><noscript><p>Enable JavaScript</p></noscript></body>",
        None,
    );
    assert_eq!(
        Selector::parse("p::text").unwrap().getall(&d),
        ["Enable JavaScript"]
    );
}

#[test]
fn xpath_has_class_is_parsels_extension() {
    let d = Document::parse(
        r#"<p class="a  b">1</p><p class="ab">2</p><p class="b">3</p>"#,
        None,
    );
    // parsel: ['1'] and ['1', '3'].
    let both = Selector::parse(r#"//p[has-class("a", "b")]/text()"#).unwrap();
    assert_eq!(both.getall(&d), ["1"]);
    let b = Selector::parse(r#"//p[has-class("b")]/text()"#).unwrap();
    assert_eq!(b.getall(&d), ["1", "3"]);
}
