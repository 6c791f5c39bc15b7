//! Log in with a form POST, keep the session cookie, then crawl the pages
//! only members see: Scrapy's `FormRequest` login, as a spindle spider.
//!
//! ```text
//! cargo run -p spindle --example login               # crawls a demo shop it serves itself
//! cargo run -p spindle --example login -- http://127.0.0.1:8000
//! ```
//!
//! Each response comes back to `parse` with the label its request was given,
//! so one spider routes the login page, the page after logging in and the
//! member pages to their own steps. The cookie jar (`COOKIES_ENABLED`, on by
//! default) stores the `Set-Cookie` of the login's 302 and sends it with
//! every later request to the site.

use spindle::{Output, Request, Response, Spider, SpiderError};

/// Logs in as `user`, then visits every member page linked from the account page.
pub struct LoginSpider {
    /// The site's base URL, without a trailing slash.
    pub base: String,
    /// Login form fields.
    pub user: String,
    /// The password.
    pub password: String,
}

impl Spider for LoginSpider {
    fn name(&self) -> &str {
        "login"
    }

    fn start_requests(&self) -> Vec<Request> {
        let login = format!("{}/login", self.base);
        vec![Request::get(&login).unwrap().with_callback("login_form")]
    }

    fn parse(&self, response: &Response) -> Result<Output, SpiderError> {
        let mut out = Output::default();
        match response.callback() {
            // The login page: post the form. Its 302 to /account is followed
            // with the same label, and its cookie is kept.
            Some("login_form") => out.requests.push(
                Request::form(
                    response.urljoin("/login")?.as_str(),
                    &[("user", &self.user), ("password", &self.password)],
                )?
                .with_callback("account"),
            ),
            Some("account") => {
                let page =
                    spindle::LinkExtractor::new().extract(&response.body, &response.url, None);
                for link in page
                    .links
                    .iter()
                    .filter(|u| u.path().starts_with("/members/"))
                {
                    out.requests
                        .push(Request::new(link.clone()).with_callback("member"));
                }
            }
            Some("member") => {
                let title = response.css("title::text")?.get().map(str::to_string);
                out.add_item(&serde_json::json!({"url": response.url.as_str(), "title": title}))?;
            }
            other => return Err(format!("no parse step for label {other:?}").into()),
        }
        Ok(out)
    }
}
