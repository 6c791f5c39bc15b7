//! A byte scanner for the common extraction: links from a few tags' attributes, `<base href>`
//! and the `<title>` text, in one pass over UTF-8 HTML, without lol_html's selector machinery
//! and output rewriting (which took two thirds of a crawl's CPU).
//!
//! It follows lol_html's tokenizer state by state (tags and attributes, comments, doctypes,
//! bogus comments, raw text, RCDATA, script data, `<svg>` foreign content, the strict mode's
//! ambiguity guard) so that it finds exactly what lol_html finds. Whatever it does not model
//! (MathML, SVG integration points, CDATA, script comments, a `<meta>` naming another charset,
//! an attribute quirk, non-UTF-8 input) makes it give up, and the caller runs lol_html instead.

use memchr::{memchr, memmem};

/// What the scanner looks for; built once per extractor.
#[derive(Clone, Debug)]
pub(super) struct Plan {
    /// Tags links come from, lowercase.
    pub tags: Vec<String>,
    /// Their attributes holding links, lowercase, first present wins.
    pub attrs: Vec<String>,
    /// Whether the `<title>` text is wanted.
    pub title: bool,
    /// Whether a `<meta>` charset may switch the decoding (no charset from the headers).
    pub meta_adjust: bool,
}

/// A start tag of interest, as the scanner hands it to the caller.
pub(super) enum Event<'a> {
    /// `<base>` with an `href` (its raw value).
    Base(&'a str),
    /// A link-source tag's attribute value (raw), `""` for an attribute without a value.
    Link(&'a str),
}

/// What the pass found besides the events: the raw title text, if a `<title>` was seen.
pub(super) struct Scanned<'a> {
    pub title: Option<&'a str>,
}

/// Gave up: the page needs lol_html.
pub(super) struct Bail;

const WS: [bool; 256] = {
    let mut t = [false; 256];
    t[b' ' as usize] = true;
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[b'\t' as usize] = true;
    t[0x0C] = true;
    t
};

/// `memchr`, with the first bytes looked at inline: most gaps between tags and most quoted
/// values are short, and the call costs more than the search there.
#[inline(always)]
fn find(needle: u8, hay: &[u8]) -> Option<usize> {
    let head = hay.len().min(16);
    if let Some(i) = hay[..head].iter().position(|&c| c == needle) {
        return Some(i);
    }
    memchr(needle, &hay[head..]).map(|p| p + head)
}

#[inline]
fn is_ws(b: u8) -> bool {
    WS[b as usize]
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Ns {
    Html,
    Svg,
}

#[derive(Clone, Copy)]
enum Guard {
    Default,
    InSelect,
    InTemplateInSelect(u64),
    InOrAfterFrameset,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    Data,
    RcData,
    Raw,
    Script,
    Plain,
}

/// A tag's attributes as byte ranges: name, and value (`None` without `=`).
type Attr = (usize, usize, Option<(usize, usize)>);

enum TagEnd {
    /// Position after `>`, and whether the tag ended with `/>`.
    Done(usize, bool),
    /// The input ended inside the tag: lol_html drops it and everything after.
    Eof,
}

/// Parses attributes from `i` (just after the tag name) to the tag's `>`, as lol_html's
/// attribute states do.
fn parse_attrs(b: &[u8], mut i: usize, attrs: &mut Vec<Attr>) -> Result<TagEnd, Bail> {
    attrs.clear();
    let n = b.len();
    'before_name: loop {
        // before_attribute_name_state
        while i < n && is_ws(b[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(TagEnd::Eof);
        }
        match b[i] {
            b'/' => {
                // self_closing_start_tag_state
                i += 1;
                if i >= n {
                    return Ok(TagEnd::Eof);
                }
                if b[i] == b'>' {
                    return Ok(TagEnd::Done(i + 1, true));
                }
                continue 'before_name;
            }
            b'>' => return Ok(TagEnd::Done(i + 1, false)),
            _ => {}
        }
        // attribute_name_state: the first character is part of the name, even `=`.
        let start = i;
        i += 1;
        while i < n && !is_ws(b[i]) && !matches!(b[i], b'=' | b'/' | b'>') {
            i += 1;
        }
        if i >= n {
            return Ok(TagEnd::Eof);
        }
        let name_end = i;
        if is_ws(b[i]) {
            // after_attribute_name_state
            while i < n && is_ws(b[i]) {
                i += 1;
            }
            if i >= n {
                return Ok(TagEnd::Eof);
            }
            if b[i] != b'=' {
                attrs.push((start, name_end, None));
                // `/`, `>` or the next attribute: as before_attribute_name_state would.
                continue 'before_name;
            }
        }
        match b[i] {
            b'/' | b'>' => {
                attrs.push((start, name_end, None));
                continue 'before_name;
            }
            _ => {}
        }
        // b[i] == b'=': before_attribute_value_state
        i += 1;
        while i < n && is_ws(b[i]) {
            i += 1;
        }
        if i >= n {
            return Ok(TagEnd::Eof);
        }
        match b[i] {
            q @ (b'"' | b'\'') => {
                let Some(len) = find(q, &b[i + 1..]) else {
                    return Ok(TagEnd::Eof);
                };
                attrs.push((start, name_end, Some((i + 1, i + 1 + len))));
                i += len + 2;
            }
            // lol_html goes to the data state here whatever the tag: not modelled.
            b'>' => return Err(Bail),
            _ => {
                let v = i;
                while i < n && !is_ws(b[i]) && b[i] != b'>' {
                    i += 1;
                }
                if i >= n {
                    return Ok(TagEnd::Eof);
                }
                attrs.push((start, name_end, Some((v, i))));
            }
        }
    }
}

/// The end of a tag name started at `i`: lol_html's tag_name_state takes everything up to
/// whitespace, `/` or `>`.
#[inline]
fn tag_name_end(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && !is_ws(b[i]) && b[i] != b'/' && b[i] != b'>' {
        i += 1;
    }
    i
}

/// Lowercase tag name in a small buffer; names longer than it are no tag this module knows.
struct Name {
    buf: [u8; 16],
    len: usize,
    /// Whether the name is one the tokenizer state, the namespaces, the ambiguity guard or
    /// the `<base>`/`<meta>`/`<title>` handling care about.
    special: bool,
}

impl Name {
    fn new(raw: &[u8]) -> Self {
        let mut buf = [0u8; 16];
        if raw.len() > buf.len() {
            return Name {
                buf,
                len: usize::MAX,
                special: false,
            };
        }
        for (d, s) in buf.iter_mut().zip(raw) {
            *d = s.to_ascii_lowercase();
        }
        let special = matches!(
            &buf[..raw.len()],
            b"textarea"
                | b"title"
                | b"plaintext"
                | b"script"
                | b"style"
                | b"iframe"
                | b"xmp"
                | b"noembed"
                | b"noframes"
                | b"noscript"
                | b"svg"
                | b"math"
                | b"select"
                | b"frameset"
                | b"template"
                | b"input"
                | b"keygen"
                | b"base"
                | b"meta"
                | b"desc"
                | b"foreignobject"
                | b"font"
        );
        Name {
            buf,
            len: raw.len(),
            special,
        }
    }

    #[inline]
    fn is(&self, lower: &[u8]) -> bool {
        self.len == lower.len() && &self.buf[..self.len] == lower
    }

    fn is_any(&self, names: &[&[u8]]) -> bool {
        names.iter().any(|n| self.is(n))
    }
}

const AMBIGUOUS: &[&[u8]] = &[
    b"textarea",
    b"title",
    b"plaintext",
    b"script",
    b"style",
    b"iframe",
    b"xmp",
    b"noembed",
    b"noframes",
    b"noscript",
];

const FOREIGN_EXIT: &[&[u8]] = &[
    b"b",
    b"big",
    b"blockquote",
    b"body",
    b"br",
    b"center",
    b"code",
    b"dd",
    b"div",
    b"dl",
    b"dt",
    b"em",
    b"embed",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"head",
    b"hr",
    b"i",
    b"img",
    b"li",
    b"listing",
    b"menu",
    b"meta",
    b"nobr",
    b"ol",
    b"p",
    b"pre",
    b"ruby",
    b"s",
    b"small",
    b"span",
    b"strong",
    b"strike",
    b"sub",
    b"sup",
    b"table",
    b"tt",
    b"u",
    b"ul",
    b"var",
];

fn text_type(name: &Name) -> Text {
    if name.is(b"textarea") || name.is(b"title") {
        Text::RcData
    } else if name.is(b"plaintext") {
        Text::Plain
    } else if name.is(b"script") {
        Text::Script
    } else if name.is_any(&[
        b"style",
        b"iframe",
        b"xmp",
        b"noembed",
        b"noframes",
        b"noscript",
    ]) {
        Text::Raw
    } else {
        Text::Data
    }
}

impl Guard {
    /// lol_html's strict-mode `AmbiguityGuard`: an error there ends its pass, so give up.
    fn start(&mut self, name: &Name) -> Result<(), Bail> {
        let ambiguous = || {
            if name.is_any(AMBIGUOUS) {
                Err(Bail)
            } else {
                Ok(())
            }
        };
        match *self {
            Guard::Default => {
                if name.is(b"select") {
                    *self = Guard::InSelect;
                } else if name.is(b"frameset") {
                    *self = Guard::InOrAfterFrameset;
                }
            }
            Guard::InSelect => {
                if name.is_any(&[b"select", b"textarea", b"input", b"keygen"]) {
                    *self = Guard::Default;
                } else if name.is(b"template") {
                    *self = Guard::InTemplateInSelect(1);
                } else if !name.is(b"script") {
                    ambiguous()?;
                }
            }
            Guard::InTemplateInSelect(depth) => {
                if name.is(b"template") {
                    *self = Guard::InTemplateInSelect(depth + 1);
                } else {
                    ambiguous()?;
                }
            }
            Guard::InOrAfterFrameset => {
                if !name.is(b"noframes") {
                    ambiguous()?;
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, name: &Name) {
        match *self {
            Guard::InSelect if name.is(b"select") => *self = Guard::Default,
            Guard::InTemplateInSelect(depth) if name.is(b"template") => {
                *self = if depth == 1 {
                    Guard::InSelect
                } else {
                    Guard::InTemplateInSelect(depth - 1)
                }
            }
            _ => {}
        }
    }
}

/// Whether a `<meta>` leaves the decoding at UTF-8 (it names no charset, or UTF-8).
fn meta_keeps_utf8(b: &[u8], attrs: &[Attr]) -> bool {
    let value = |a: &Attr| a.2.map_or(&b[0..0], |(s, e)| &b[s..e]);
    for a in attrs {
        let name = &b[a.0..a.1];
        if name.eq_ignore_ascii_case(b"charset") {
            let label = value(a);
            return encoding_rs::Encoding::for_label(label) == Some(encoding_rs::UTF_8);
        }
        if name.eq_ignore_ascii_case(b"http-equiv") {
            // Only the plain `…; charset=utf-8` form is taken; anything else goes to lol_html.
            let content = attrs
                .iter()
                .find(|c| b[c.0..c.1].eq_ignore_ascii_case(b"content"))
                .map(value);
            return match content {
                None => true,
                Some(c) => {
                    let c = String::from_utf8_lossy(c).to_ascii_lowercase();
                    match c.find("charset") {
                        None => true,
                        Some(at) => {
                            let rest = c[at + "charset".len()..]
                                .trim_start()
                                .trim_start_matches('=')
                                .trim_matches(|ch: char| {
                                    ch.is_ascii_whitespace() || ch == '"' || ch == '\'' || ch == ';'
                                });
                            rest == "utf-8" || rest == "utf8"
                        }
                    }
                }
            };
        }
    }
    true
}

/// Finds the appropriate end tag `</name` (followed by whitespace, `/` or `>`) from `i`;
/// returns the position of its `<`.
fn find_end_tag(b: &[u8], mut i: usize, name: &Name) -> Option<usize> {
    let lower = &name.buf[..name.len];
    loop {
        let lt = i + memchr(b'<', &b[i..])?;
        let s = lt + 2;
        if b.get(lt + 1) == Some(&b'/')
            && b.len() > s + lower.len()
            && b[s..s + lower.len()].eq_ignore_ascii_case(lower)
        {
            let next = b[s + lower.len()];
            if is_ws(next) || next == b'/' || next == b'>' {
                return Some(lt);
            }
        }
        i = lt + 1;
    }
}

/// One pass over `html` (valid UTF-8), calling `on` for each `<base href>` and link in
/// document order. `Err(Bail)` when lol_html must do it; events already delivered must then
/// be discarded by the caller.
pub(super) fn scan<'a>(
    html: &'a str,
    plan: &Plan,
    mut on: impl FnMut(Event<'a>),
) -> Result<Scanned<'a>, Bail> {
    let b = html.as_bytes();
    let n = b.len();
    let attr_str = |r: (usize, usize)| &html[r.0..r.1];
    let mut attrs: Vec<Attr> = Vec::with_capacity(8);
    let mut ns: Vec<Ns> = vec![Ns::Html];
    let mut guard = Guard::Default;
    let mut saw_base = false;
    let mut title: Option<&'a str> = None;
    let mut i = 0;
    while i < n {
        let Some(p) = find(b'<', &b[i..]) else {
            break;
        };
        let lt = i + p;
        i = lt + 1;
        if i >= n {
            break;
        }
        let c = b[i];
        if c.is_ascii_alphabetic() {
            // A start tag.
            let name_end = tag_name_end(b, i);
            let raw_name = &b[i..name_end];
            let (end, self_closing) = match parse_attrs(b, name_end, &mut attrs)? {
                TagEnd::Done(end, sc) => (end, sc),
                TagEnd::Eof => break,
            };
            let name = Name::new(raw_name);
            let is_link = plan.tags.iter().any(|t| {
                let t = t.as_bytes();
                t.len() == raw_name.len() && raw_name.eq_ignore_ascii_case(t)
            });
            if !name.special && matches!(guard, Guard::Default) && ns.len() == 1 {
                // The common case: an HTML element that changes no state.
                if is_link {
                    let value = plan.attrs.iter().find_map(|a| {
                        attrs
                            .iter()
                            .find(|at| b[at.0..at.1].eq_ignore_ascii_case(a.as_bytes()))
                            .map(|at| at.2.map_or("", attr_str))
                    });
                    if let Some(value) = value {
                        on(Event::Link(value));
                    }
                }
                i = end;
                continue;
            }
            guard.start(&name)?;
            // The tree builder simulator's feedback, before the handlers run.
            let current = *ns.last().expect("never empty");
            let mut text = Text::Data;
            if name.is(b"svg") {
                ns.push(Ns::Svg);
            } else if name.is(b"math") {
                return Err(Bail);
            } else if current != Ns::Html {
                if name.is_any(FOREIGN_EXIT) {
                    ns.pop();
                } else if name.is_any(&[b"desc", b"title", b"foreignobject", b"font"]) {
                    return Err(Bail);
                }
            } else {
                text = text_type(&name);
            }
            let foreign = *ns.last().expect("never empty") != Ns::Html;
            let is_title = plan.title && name.is(b"title");
            if foreign && (is_link || is_title || name.is(b"base") || name.is(b"meta")) {
                return Err(Bail);
            }
            let find = |want: &[u8]| {
                attrs
                    .iter()
                    .find(|a| b[a.0..a.1].eq_ignore_ascii_case(want))
                    .map(|a| a.2.map_or("", attr_str))
            };
            if !saw_base && name.is(b"base") {
                if let Some(href) = find(b"href") {
                    saw_base = true;
                    on(Event::Base(href));
                }
            }
            if plan.meta_adjust && name.is(b"meta") && !meta_keeps_utf8(b, &attrs) {
                return Err(Bail);
            }
            if is_link {
                if let Some(value) = plan.attrs.iter().find_map(|a| find(a.as_bytes())) {
                    on(Event::Link(value));
                }
            }
            let capture = is_title && title.is_none();
            if capture && self_closing {
                // lol_html gives a self-closed element no end tag handlers.
                return Err(Bail);
            }
            i = end;
            match text {
                Text::Data => {}
                Text::Plain => break,
                Text::RcData | Text::Raw | Text::Script => {
                    let Some(close) = find_end_tag(b, i, &name) else {
                        if capture {
                            return Err(Bail);
                        }
                        break;
                    };
                    if text == Text::Script && memmem::find(&b[i..close], b"<!--").is_some() {
                        return Err(Bail);
                    }
                    if capture {
                        title = Some(&html[i..close]);
                    }
                    match parse_attrs(b, close + 2 + name.len, &mut attrs)? {
                        TagEnd::Done(end, _) => i = end,
                        TagEnd::Eof => break,
                    }
                    guard.end(&name);
                }
            }
        } else if c == b'/' {
            let Some(&c2) = b.get(i + 1) else {
                break;
            };
            if c2.is_ascii_alphabetic() {
                let name_end = tag_name_end(b, i + 1);
                let name = Name::new(&b[i + 1..name_end]);
                match parse_attrs(b, name_end, &mut attrs)? {
                    TagEnd::Done(end, _) => i = end,
                    TagEnd::Eof => break,
                }
                guard.end(&name);
                let current = *ns.last().expect("never empty");
                if current == Ns::Svg && (name.is(b"svg") || name.is(b"p") || name.is(b"br")) {
                    ns.pop();
                }
            } else if c2 == b'>' {
                i += 2;
            } else {
                // A bogus comment to the next `>`.
                match memchr(b'>', &b[i + 1..]) {
                    Some(p) => i = i + 1 + p + 1,
                    None => break,
                }
            }
        } else if c == b'!' {
            let rest = &b[i + 1..];
            if rest.starts_with(b"--") {
                let body = i + 3;
                match comment_end(&b[body..]) {
                    Some(len) => i = body + len,
                    None => break,
                }
            } else if rest.len() >= 7 && rest[..7].eq_ignore_ascii_case(b"DOCTYPE") {
                match memchr(b'>', &b[i + 8..]) {
                    Some(p) => i = i + 8 + p + 1,
                    None => break,
                }
            } else if rest.starts_with(b"[CDATA[") && *ns.last().expect("never empty") != Ns::Html {
                return Err(Bail);
            } else {
                match memchr(b'>', rest) {
                    Some(p) => i = i + 1 + p + 1,
                    None => break,
                }
            }
        } else if c == b'?' {
            match memchr(b'>', &b[i + 1..]) {
                Some(p) => i = i + 1 + p + 1,
                None => break,
            }
        }
        // Anything else: the `<` was text; go on from the character after it.
    }
    Ok(Scanned { title })
}

/// The length of a comment's rest after `<!--`, through its closing `>`; `None` at EOF.
fn comment_end(rest: &[u8]) -> Option<usize> {
    if rest.first() == Some(&b'>') {
        return Some(1);
    }
    if rest.starts_with(b"->") {
        return Some(2);
    }
    let mut from = 0;
    loop {
        let at = from + memmem::find(&rest[from..], b"--")?;
        let mut j = at + 2;
        while rest.get(j) == Some(&b'-') {
            j += 1;
        }
        match rest.get(j) {
            Some(b'>') => return Some(j + 1),
            Some(b'!') if rest.get(j + 1) == Some(&b'>') => return Some(j + 2),
            None => return None,
            _ => from = at + 1,
        }
    }
}
