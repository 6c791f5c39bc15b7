//! Dynamic routes: whole requests (method, headers, body) in, pages out.
//!
//! [`Shop`] is a small site with what real spiders meet: a login form that
//! sets a session cookie, pages only visible when logged in, a paginated
//! list of products with detail pages, and a JSON API that takes POST bodies
//! and pages through results. Its pages are deterministic, so tests know
//! exactly what a complete crawl must find.

use crate::site::{Page, Site, HTML};

/// A request as a dynamic route sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, …
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// Every header, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// A cookie's value from the `Cookie` header.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.header("cookie")?.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
    }

    /// A field of an `application/x-www-form-urlencoded` body.
    pub fn form_field(&self, name: &str) -> Option<String> {
        let body = std::str::from_utf8(&self.body).ok()?;
        body.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (decode_form(k) == name).then(|| decode_form(v))
        })
    }

    /// The path without its query.
    pub fn path_only(&self) -> &str {
        self.path.split('?').next().unwrap_or("")
    }
}

/// The first value of a header among lower-cased (name, value) pairs.
pub(crate) fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    headers
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.as_str())
}

fn decode_form(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The shop: a site of `products` products, 5 to a list page.
///
/// - `/login` (GET) shows a form; `POST /login` with `user=alice&password=secret`
///   answers 302 to `/account` with `Set-Cookie: session=s3cr3t-session; Path=/`,
///   anything else 403.
/// - `/account` and `/members/{i}` (i < `members`) need that cookie; without
///   it they answer 302 to `/login`. `/account` links to every member page.
/// - `/list?page={n}` (n from 1) links to 5 `/product/{i}` pages and the next
///   list page; `/product/{i}` has `<h1 class="name">Product {i}</h1>` and
///   `<span class="price">{i}.50</span>`.
/// - `POST /api/products` with a JSON body `{"page": n}` (and
///   `Content-Type: application/json`, else 415) answers
///   `{"products": [{"id", "name"}…], "next_page": n+1 or null}`, 5 a page.
pub struct Shop {
    /// Products in the list, the API and the detail pages.
    pub products: usize,
    /// Member pages behind the login.
    pub members: usize,
}

/// The session cookie value a successful login sets.
pub const SESSION: &str = "s3cr3t-session";
const PER_PAGE: usize = 5;

impl Shop {
    /// The site, ready for [`crate::TestServer::builder`]'s `host`.
    pub fn site(&self) -> Site {
        let products = self.products;
        let members = self.members;
        Site::pages(Vec::<(String, u16, String)>::new())
            .handler(move |r| answer(r, products, members))
    }

    /// Every path a complete logged-in crawl from `/login` fetches with GET.
    pub fn member_paths(&self) -> Vec<String> {
        (0..self.members).map(|i| format!("/members/{i}")).collect()
    }

    /// Number of list pages.
    pub fn list_pages(&self) -> usize {
        self.products.div_ceil(PER_PAGE).max(1)
    }
}

fn html(status: u16, body: String) -> Page {
    Page {
        status,
        content_type: HTML.to_string(),
        headers: Vec::new(),
        body,
    }
}

fn redirect(to: &str) -> Page {
    let mut page = html(302, format!("<a href=\"{to}\">moved</a>"));
    page.headers.push(("Location".to_string(), to.to_string()));
    page
}

fn answer(r: &HttpRequest, products: usize, members: usize) -> Option<Page> {
    let path = r.path_only();
    let logged_in = r.cookie("session") == Some(SESSION);
    let query_page = r
        .path
        .split_once("page=")
        .and_then(|(_, n)| n.split('&').next()?.parse::<usize>().ok())
        .unwrap_or(1);
    Some(match (r.method.as_str(), path) {
        ("GET", "/login") => html(
            200,
            "<html><head><title>Log in</title></head><body>\
             <form action=\"/login\" method=\"post\">\
             <input name=\"user\"><input name=\"password\" type=\"password\">\
             </form></body></html>"
                .to_string(),
        ),
        ("POST", "/login") => {
            if r.form_field("user").as_deref() == Some("alice")
                && r.form_field("password").as_deref() == Some("secret")
            {
                let mut page = redirect("/account");
                page.headers.push((
                    "Set-Cookie".to_string(),
                    format!("session={SESSION}; Path=/; HttpOnly"),
                ));
                page
            } else {
                html(403, "<h1>Wrong user or password</h1>".to_string())
            }
        }
        ("GET", "/account") if !logged_in => redirect("/login"),
        ("GET", "/account") => {
            let links: String = (0..members)
                .map(|i| format!("<a href=\"/members/{i}\">member {i}</a>"))
                .collect();
            html(
                200,
                format!("<html><head><title>Account</title></head><body><h1>Welcome alice</h1>{links}</body></html>"),
            )
        }
        ("GET", p) if p.starts_with("/members/") => {
            let i: usize = p["/members/".len()..].parse().ok()?;
            if i >= members {
                return None;
            }
            if !logged_in {
                return Some(redirect("/login"));
            }
            html(
                200,
                format!("<html><head><title>Member {i}</title></head><body><h1>Member {i}</h1></body></html>"),
            )
        }
        ("GET", "/list") => {
            let start = (query_page - 1) * PER_PAGE;
            if start >= products && query_page > 1 {
                return None;
            }
            let mut body = String::from("<html><head><title>Products</title></head><body><ul>");
            for i in start..(start + PER_PAGE).min(products) {
                body.push_str(&format!(
                    "<li><a class=\"product\" href=\"/product/{i}\">Product {i}</a></li>"
                ));
            }
            body.push_str("</ul>");
            if start + PER_PAGE < products {
                body.push_str(&format!(
                    "<a class=\"next\" href=\"/list?page={}\">next</a>",
                    query_page + 1
                ));
            }
            body.push_str("</body></html>");
            html(200, body)
        }
        ("GET", p) if p.starts_with("/product/") => {
            let i: usize = p["/product/".len()..].parse().ok()?;
            if i >= products {
                return None;
            }
            html(
                200,
                format!("<html><head><title>Product {i}</title></head><body>\
                         <h1 class=\"name\">Product {i}</h1><span class=\"price\">{i}.50</span></body></html>"),
            )
        }
        ("POST", "/api/products") => {
            let is_json = r
                .header("content-type")
                .is_some_and(|ct| ct.starts_with("application/json"));
            if !is_json {
                return Some(html(415, "JSON bodies only".to_string()));
            }
            let page = std::str::from_utf8(&r.body)
                .ok()
                .and_then(|b| b.split_once("\"page\":"))
                .and_then(|(_, rest)| {
                    rest.trim_start()
                        .split(|c: char| !c.is_ascii_digit())
                        .next()?
                        .parse::<usize>()
                        .ok()
                })
                .unwrap_or(1)
                .max(1);
            let start = (page - 1) * PER_PAGE;
            let items: Vec<String> = (start..(start + PER_PAGE).min(products))
                .map(|i| format!("{{\"id\":{i},\"name\":\"Product {i}\"}}"))
                .collect();
            let next = if start + PER_PAGE < products {
                (page + 1).to_string()
            } else {
                "null".to_string()
            };
            Page {
                status: 200,
                content_type: "application/json".to_string(),
                headers: Vec::new(),
                body: format!(
                    "{{\"products\":[{}],\"next_page\":{next}}}",
                    items.join(",")
                ),
            }
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> HttpRequest {
        HttpRequest {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn login_sets_the_session_and_guards_members() {
        let shop = Shop {
            products: 12,
            members: 3,
        };
        let site = shop.site();
        let ok = site.answer(
            &req("POST", "/login", &[], "user=alice&password=secret"),
            "",
        );
        assert_eq!(ok.status, 302);
        assert!(ok
            .headers
            .iter()
            .any(|(k, v)| k == "Set-Cookie" && v.contains(SESSION)));
        let bad = site.answer(&req("POST", "/login", &[], "user=alice&password=nope"), "");
        assert_eq!(bad.status, 403);
        let out = site.answer(&req("GET", "/members/1", &[], ""), "");
        assert_eq!(out.status, 302);
        let cookie = format!("other=1; session={SESSION}");
        let inside = site.answer(&req("GET", "/members/1", &[("Cookie", &cookie)], ""), "");
        assert_eq!(inside.status, 200);
        assert!(inside.body.contains("Member 1"));
    }

    #[test]
    fn api_pages_through_json() {
        let site = Shop {
            products: 12,
            members: 0,
        }
        .site();
        let json = [("Content-Type", "application/json")];
        let p3 = site.answer(&req("POST", "/api/products", &json, r#"{"page": 3}"#), "");
        assert_eq!(
            p3.body,
            r#"{"products":[{"id":10,"name":"Product 10"},{"id":11,"name":"Product 11"}],"next_page":null}"#
        );
        let p1 = site.answer(&req("POST", "/api/products", &json, r#"{"page":1}"#), "");
        assert!(p1.body.ends_with(r#""next_page":2}"#), "{}", p1.body);
        let form = site.answer(&req("POST", "/api/products", &[], "page=1"), "");
        assert_eq!(form.status, 415);
    }
}
