//! CSS with parsel's pseudo-elements `::text` and `::attr(NAME)`, on scraper (servo's `selectors`).
//!
//! servo's selectors do not know parsel's pseudo-elements, so each comma-separated part is split
//! into the plain CSS before `::` (matched by scraper) and what to take from each match.

use scraper::ElementRef;

use super::{SelectorError, Value};

/// A compiled CSS selector group.
#[derive(Clone, Debug)]
pub(super) struct Css {
    parts: Vec<Part>,
}

#[derive(Clone, Debug)]
struct Part {
    /// `None` matches every element (`*::text`, `::text`).
    elements: Option<scraper::Selector>,
    /// The elements under a match count as matches too (`X ::text`).
    subtree: bool,
    take: Take,
}

#[derive(Clone, Debug, PartialEq)]
enum Take {
    /// No pseudo-element: spindle's field rule, the element's whole text trimmed.
    WholeText,
    /// `X::text`: the text nodes that are children of a match.
    ChildText,
    /// `X::attr(NAME)`.
    Attr(String),
}

impl Css {
    pub(super) fn compile(text: &str) -> Result<Css, SelectorError> {
        let error = |reason: String| SelectorError::Css {
            selector: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut parts = Vec::new();
        for part in split_top_level(text, ',') {
            let (base, take) = match find_top_level(part, "::") {
                None => (part, Take::WholeText),
                Some(at) => {
                    let (base, take) = pseudo_element(part, at).map_err(error)?;
                    (base, take)
                }
            };
            let (base, subtree) = subtree_form(base, &take);
            let elements = if base.is_empty() || base == "*" {
                None
            } else {
                let parsed = scraper::Selector::parse(&base).map_err(|e| error(e.to_string()))?;
                Some(parsed)
            };
            if base.is_empty() && take == Take::WholeText {
                return Err(error("a part of the group is empty".into()));
            }
            parts.push(Part {
                elements,
                subtree,
                take,
            });
        }
        Ok(Css { parts })
    }

    /// Values in document order, each node once even when several parts match it, as parsel's XPath
    /// union gives them.
    pub(super) fn select(&self, html: &scraper::Html) -> Vec<Value> {
        let n = self.parts.len();
        let mut out = Vec::new();
        // Per open element and part: (selected, by the part's own CSS); and per part, how many open
        // elements its own CSS matched.
        let mut frames: Vec<(bool, bool)> = Vec::new();
        let mut open_matches = vec![0usize; n];
        for edge in html.tree.root().traverse() {
            match edge {
                ego_tree::iter::Edge::Open(node) => {
                    if let Some(el) = ElementRef::wrap(node) {
                        let start = frames.len();
                        let mut whole_text = false;
                        let mut attrs: Vec<&str> = Vec::new();
                        for (i, part) in self.parts.iter().enumerate() {
                            let hit = part.elements.as_ref().is_none_or(|s| s.matches(&el));
                            let under = part.subtree && open_matches[i] > 0;
                            frames.push((hit || under, hit));
                            open_matches[i] += usize::from(hit);
                            if !(hit || under) {
                                continue;
                            }
                            match &part.take {
                                Take::WholeText => whole_text = true,
                                Take::Attr(name) if !attrs.contains(&name.as_str()) => {
                                    attrs.push(name);
                                }
                                _ => {}
                            }
                        }
                        debug_assert_eq!(frames.len(), start + n);
                        if whole_text {
                            out.push(Value::text(
                                el.text().collect::<String>().trim().to_string(),
                            ));
                        }
                        // Attribute nodes come in the element's attribute order, as in an XPath union.
                        for (name, value) in el.value().attrs() {
                            if attrs.contains(&name) {
                                out.push(Value::attr(name, value));
                            }
                        }
                    } else if let scraper::Node::Text(text) = node.value() {
                        let parent = frames.len().checked_sub(n).map(|top| &frames[top..]);
                        let taken = self.parts.iter().enumerate().any(|(i, part)| {
                            part.take == Take::ChildText && parent.is_some_and(|p| p[i].0)
                        });
                        if taken {
                            out.push(Value::text(text.to_string()));
                        }
                    }
                }
                ego_tree::iter::Edge::Close(node) => {
                    if node.value().is_element() {
                        let top = frames.len() - n;
                        for (i, (_, hit)) in frames.drain(top..).enumerate() {
                            open_matches[i] -= usize::from(hit);
                        }
                    }
                }
            }
        }
        out
    }
}

/// parsel (through cssselect) reads `X ::text` and `X *::text` (and the same with `::attr`) as
/// applying to `X` and every element under it: the descendant step and the `*` fold into one
/// `descendant-or-self::*`. Any other combinator before the `*` keeps its meaning. Returns the CSS
/// to match and whether the elements under each match count too.
fn subtree_form(base: &str, take: &Take) -> (String, bool) {
    let trimmed = base.trim();
    if *take == Take::WholeText {
        return (trimmed.to_string(), false);
    }
    let before_star = trimmed.strip_suffix('*').unwrap_or(trimmed);
    let spaced = if before_star.len() < trimmed.len() {
        before_star.ends_with(char::is_whitespace)
    } else {
        base.ends_with(char::is_whitespace)
    };
    let prefix = before_star.trim_end();
    if spaced && !prefix.is_empty() && !prefix.ends_with(['>', '+', '~']) {
        (prefix.to_string(), true)
    } else if base.ends_with(char::is_whitespace) && !trimmed.is_empty() {
        // `X > ::text`: the implied `*` is a real step.
        (format!("{trimmed} *"), false)
    } else {
        (trimmed.to_string(), false)
    }
}

/// Splits off the pseudo-element that starts at `at` (the `::`); it must end the part.
fn pseudo_element(part: &str, at: usize) -> Result<(&str, Take), String> {
    let base = &part[..at];
    let pseudo = part[at + 2..].trim_end();
    let lower = pseudo.to_ascii_lowercase();
    if lower == "text" {
        return Ok((base, Take::ChildText));
    }
    if let Some(args) = lower.strip_prefix("attr(") {
        if !args.ends_with(')') {
            return Err(format!("`::{pseudo}` is missing its closing parenthesis"));
        }
        // Keep the name's own case: HTML attribute names are lower case in the tree, and parsel
        // matches `::attr(HREF)` against nothing.
        let name = pseudo[5..pseudo.len() - 1].trim();
        let name = name
            .strip_prefix(['"', '\''])
            .and_then(|n| n.strip_suffix(['"', '\'']))
            .unwrap_or(name);
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("`::{pseudo}` needs one attribute name"));
        }
        return Ok((base, Take::Attr(name.to_string())));
    }
    let name = pseudo.split(['(', ' ']).next().unwrap_or(pseudo);
    Err(format!(
        "unknown pseudo-element `::{name}` (parsel knows `::text` and `::attr(NAME)`)"
    ))
}

/// Splits at `sep` outside quotes, brackets and parentheses.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    scan_top_level(text, |i, c| {
        if c == sep {
            parts.push(&text[start..i]);
            start = i + c.len_utf8();
        }
        false
    });
    parts.push(&text[start..]);
    parts
}

/// The byte offset of the first `needle` outside quotes, brackets and parentheses.
fn find_top_level(text: &str, needle: &str) -> Option<usize> {
    let mut found = None;
    scan_top_level(text, |i, _| {
        if text[i..].starts_with(needle) {
            found = Some(i);
            return true;
        }
        false
    });
    found
}

/// Calls `visit` with each character at nesting depth zero; stops when it returns true.
fn scan_top_level(text: &str, mut visit: impl FnMut(usize, char) -> bool) {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match (quote, c) {
            (_, '\\') => escaped = true,
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '(' | '[') => depth += 1,
            (None, ')' | ']') => depth = depth.saturating_sub(1),
            (None, c) if depth == 0 && visit(i, c) => return,
            _ => {}
        }
    }
}
