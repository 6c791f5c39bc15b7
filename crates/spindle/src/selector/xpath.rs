//! XPath 1.0 (sxd-xpath) over a copy of the html5ever tree.

use sxd_document::dom;
use sxd_document::Package;
use sxd_xpath::nodeset::Node;
use sxd_xpath::{Context, Factory, Value as XValue};

use super::{SelectorError, Value};

/// XPath 1.0's core functions that sxd-xpath implements. `id()` and `lang()` are not among them.
const FUNCTIONS: &[&str] = &[
    "last",
    "position",
    "count",
    "local-name",
    "namespace-uri",
    "name",
    "string",
    "concat",
    "starts-with",
    "contains",
    "substring-before",
    "substring-after",
    "substring",
    "string-length",
    "normalize-space",
    "translate",
    "boolean",
    "not",
    "true",
    "false",
    "number",
    "sum",
    "floor",
    "ceiling",
    "round",
    // parsel's own extension, added by `context()`.
    "has-class",
];

/// Names that are followed by `(` without being function calls.
const NOT_FUNCTIONS: &[&str] = &[
    "node",
    "text",
    "comment",
    "processing-instruction",
    "and",
    "or",
    "div",
    "mod",
];

/// A checked XPath expression. sxd-xpath's compiled form is neither `Send` nor `Sync`, and compiling
/// costs microseconds against the milliseconds of parsing a page, so the text is kept and compiled
/// again on each query, which keeps [`Selector`](super::Selector) shareable across parse threads.
#[derive(Clone, Debug)]
pub(super) struct XPath {
    text: String,
}

impl XPath {
    pub(super) fn compile(text: &str) -> Result<XPath, SelectorError> {
        let error = |reason: String| SelectorError::XPath {
            selector: text.to_string(),
            reason,
        };
        if text.trim().is_empty() {
            return Err(SelectorError::Empty);
        }
        // sxd-xpath looks functions up only when it calls them, while lxml refuses an unknown one
        // when compiling; checking the names here lets a bad selector fail before any fetch.
        if let Some(name) = unknown_function(text) {
            return Err(error(format!("unknown function `{name}()`")));
        }
        let xpath = compile(text).map_err(error)?;
        // Evaluating once on an empty tree catches what surfaces only when running, such as a
        // wrong number of arguments to a function called at the top level.
        let package = Package::new();
        xpath
            .evaluate(&context(), package.as_document().root())
            .map_err(|e| error(e.to_string()))?;
        Ok(XPath {
            text: text.to_string(),
        })
    }

    pub(super) fn select(&self, tree: &Package) -> Vec<Value> {
        let Ok(xpath) = compile(&self.text) else {
            unreachable!("checked when the selector was made");
        };
        let doc = tree.as_document();
        match xpath.evaluate(&context(), doc.root()) {
            Ok(XValue::Nodeset(nodes)) => {
                nodes.document_order().into_iter().map(node_value).collect()
            }
            Ok(XValue::String(s)) => vec![Value::text(s)],
            Ok(XValue::Number(n)) => vec![Value::text(python_float(n))],
            // lxml gives booleans to parsel as 1 and 0.
            Ok(XValue::Boolean(b)) => vec![Value::text(if b { "1" } else { "0" }.into())],
            Err(e) => {
                // Only a wrong call inside a predicate gets past `compile`; it selects nothing, as
                // no node reached it on the check's empty tree.
                tracing::debug!(selector = %self.text, error = %e, "XPath evaluation failed");
                Vec::new()
            }
        }
    }
}

/// XPath 1.0's core functions plus parsel's `has-class`.
fn context() -> Context<'static> {
    let mut context = Context::new();
    context.set_function("has-class", HasClass);
    context
}

/// parsel's `has-class("a", "b")`: whether the context node's `class` attribute lists every
/// one of the given classes.
struct HasClass;

impl sxd_xpath::function::Function for HasClass {
    fn evaluate<'c, 'd>(
        &self,
        context: &sxd_xpath::context::Evaluation<'c, 'd>,
        args: Vec<XValue<'d>>,
    ) -> Result<XValue<'d>, sxd_xpath::function::Error> {
        if args.is_empty() {
            return Err(sxd_xpath::function::Error::NotEnoughArguments {
                expected: 1,
                actual: 0,
            });
        }
        let classes = match context.node {
            Node::Element(e) => e.attribute_value("class").unwrap_or(""),
            _ => "",
        };
        let has_all = args.into_iter().all(|wanted| {
            let wanted = wanted.into_string();
            classes.split_ascii_whitespace().any(|c| c == wanted)
        });
        Ok(XValue::Boolean(has_all))
    }
}

fn compile(text: &str) -> Result<sxd_xpath::XPath, String> {
    match Factory::new().build(text) {
        Ok(Some(xpath)) => Ok(xpath),
        Ok(None) => Err("empty expression".into()),
        Err(e) => Err(e.to_string()),
    }
}

fn node_value(node: Node<'_>) -> Value {
    match node {
        Node::Attribute(a) => Value::attr(a.name().local_part(), a.value()),
        Node::Text(t) => Value::text(t.text().to_string()),
        // An element yields its text trimmed, like a CSS selector without a pseudo-element
        // (parsel would yield its HTML).
        Node::Element(_) | Node::Root(_) => Value::text(node.string_value().trim().to_string()),
        other => Value::text(other.string_value()),
    }
}

/// Python's `repr` of a float, which is what parsel returns for a number (`count(//a)` gives `"2.0"`).
fn python_float(n: f64) -> String {
    if n.is_nan() {
        return "nan".into();
    }
    if n.is_infinite() {
        return if n > 0.0 { "inf" } else { "-inf" }.into();
    }
    let sci = format!("{n:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let plain = format!("{n}");
        if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

/// The first name called as a function that sxd-xpath does not implement.
fn unknown_function(text: &str) -> Option<String> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    let mut quote: Option<char> = None;
    while i < chars.len() {
        let (at, c) = chars[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        if c == '"' || c == '\'' {
            quote = Some(c);
            i += 1;
            continue;
        }
        let name_start = c.is_alphabetic() || c == '_';
        let after_var_or_attr = i > 0 && matches!(chars[i - 1].1, '$' | '@');
        if !name_start || (i > 0 && is_name_char(chars[i - 1].1)) {
            i += 1;
            continue;
        }
        let mut j = i;
        while j < chars.len() && is_name_char(chars[j].1) {
            j += 1;
        }
        // A prefixed name `p:local`, but not an axis `child::`.
        if j + 1 < chars.len() && chars[j].1 == ':' && chars[j + 1].1 != ':' {
            j += 1;
            while j < chars.len() && is_name_char(chars[j].1) {
                j += 1;
            }
        }
        let end = chars.get(j).map_or(text.len(), |&(e, _)| e);
        let name = &text[at..end];
        let mut k = j;
        while k < chars.len() && chars[k].1.is_whitespace() {
            k += 1;
        }
        let called = k < chars.len() && chars[k].1 == '(';
        if called
            && !after_var_or_attr
            && !NOT_FUNCTIONS.contains(&name)
            && !FUNCTIONS.contains(&name)
        {
            return Some(name.to_string());
        }
        i = j;
    }
    None
}

fn is_name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// Copies the html5ever tree into an sxd-document tree. Elements and attributes go in without a
/// namespace, as lxml's HTML parser leaves them, so `//svg` and `//a` need no prefix.
pub(super) fn build_tree(html: &scraper::Html) -> Package {
    let package = Package::new();
    {
        let doc = package.as_document();
        let root = doc.root();
        // The open elements, so the copy needs no recursion however deep the page nests.
        let mut open: Vec<dom::Element<'_>> = Vec::new();
        for edge in html.tree.root().traverse() {
            match edge {
                ego_tree::iter::Edge::Open(node) => match node.value() {
                    scraper::Node::Element(el) => {
                        let element = doc.create_element(&*el.name.local);
                        for (name, value) in el.attrs.iter() {
                            let qualified;
                            let name = match &name.prefix {
                                Some(prefix) => {
                                    qualified = format!("{}:{}", &**prefix, &*name.local);
                                    qualified.as_str()
                                }
                                None => &*name.local,
                            };
                            element.set_attribute_value(name, value);
                        }
                        match open.last() {
                            Some(parent) => parent.append_child(element),
                            None => root.append_child(element),
                        }
                        open.push(element);
                    }
                    scraper::Node::Text(text) => {
                        if let Some(parent) = open.last() {
                            parent.append_child(doc.create_text(text));
                        }
                    }
                    scraper::Node::Comment(comment) => {
                        let comment = doc.create_comment(comment);
                        match open.last() {
                            Some(parent) => parent.append_child(comment),
                            None => root.append_child(comment),
                        }
                    }
                    scraper::Node::ProcessingInstruction(pi) => {
                        let pi = doc.create_processing_instruction(&pi.target, Some(&pi.data));
                        match open.last() {
                            Some(parent) => parent.append_child(pi),
                            None => root.append_child(pi),
                        }
                    }
                    _ => {}
                },
                ego_tree::iter::Edge::Close(node) => {
                    if node.value().is_element() {
                        open.pop();
                    }
                }
            }
        }
    }
    package
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_python_floats() {
        // Each expected string is Python's repr of the same float, as parsel returns it.
        let cases = [
            (2.0, "2.0"),
            (1.0 / 3.0, "0.3333333333333333"),
            (1e17, "1e+17"),
            (0.00001, "1e-05"),
            (0.0001, "0.0001"),
            (-0.5, "-0.5"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (n, want) in cases {
            assert_eq!(python_float(n), want, "{n}");
        }
    }

    #[test]
    fn function_names_are_checked_outside_strings_and_node_tests() {
        assert_eq!(unknown_function("foo(//a)").as_deref(), Some("foo"));
        assert_eq!(unknown_function("//a[foo()]").as_deref(), Some("foo"));
        assert_eq!(unknown_function("//a[contains(., 'bar()')]"), None);
        assert_eq!(unknown_function("//h1/text() | //p/node()"), None);
        assert_eq!(unknown_function("count(//a) div (2)"), None);
        assert_eq!(unknown_function("child::p[@x]"), None);
        assert_eq!(unknown_function("//a[x:y(.)]").as_deref(), Some("x:y"));
    }
}
