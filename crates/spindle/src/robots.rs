//! robots.txt: what one origin allows, parsed by `robotxt`.
//!
//! Rules follow RFC 9309: a robots.txt that is missing or forbidden (4xx)
//! allows everything; one that cannot be had (5xx after retries, or no
//! connection) disallows everything for the crawl, since the site has not
//! said what it allows.

use std::time::Duration;

use robotxt::Robots;
use url::Url;

pub enum RobotsRules {
    AllowAll,
    DisallowAll,
    Rules(Box<Robots>),
}

impl RobotsRules {
    /// The rules a robots.txt response gives, for the user agent's product token.
    pub fn from_response(status: u16, body: &[u8], user_agent: &str) -> Self {
        match status {
            200..=299 => RobotsRules::Rules(Box::new(Robots::parse(body, agent_token(user_agent)))),
            400..=499 => RobotsRules::AllowAll,
            _ => RobotsRules::DisallowAll,
        }
    }

    pub fn allows(&self, url: &Url) -> bool {
        match self {
            RobotsRules::AllowAll => true,
            RobotsRules::DisallowAll => false,
            RobotsRules::Rules(robots) => robots.is_url_allowed(url),
        }
    }

    /// The `Crawl-delay` for this agent, if any and sane.
    pub fn crawl_delay(&self) -> Option<Duration> {
        match self {
            RobotsRules::Rules(robots) => robots.crawl_delay().filter(|d| !d.is_zero()),
            _ => None,
        }
    }
}

/// The origin robots.txt applies to: scheme, host and port.
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Where the origin's robots.txt lives.
pub fn robots_url(url: &Url) -> Url {
    let mut robots = url.clone();
    robots.set_path("/robots.txt");
    robots.set_query(None);
    robots.set_fragment(None);
    let _ = robots.set_username("");
    let _ = robots.set_password(None);
    robots
}

/// `spindle/0.1 (+https://…)` → `spindle`: the product token robots.txt groups name.
fn agent_token(user_agent: &str) -> &str {
    user_agent
        .split(['/', ' '])
        .next()
        .filter(|t| !t.is_empty())
        .unwrap_or("*")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn status_decides_before_content() {
        let body = b"User-agent: *\nDisallow: /";
        assert!(!RobotsRules::from_response(200, body, "spindle/1").allows(&url("http://a/x")));
        assert!(RobotsRules::from_response(404, body, "spindle/1").allows(&url("http://a/x")));
        assert!(RobotsRules::from_response(403, body, "spindle/1").allows(&url("http://a/x")));
        assert!(!RobotsRules::from_response(503, b"", "spindle/1").allows(&url("http://a/x")));
    }

    #[test]
    fn agent_groups_and_crawl_delay() {
        let body = b"User-agent: spindle\nDisallow: /private\nCrawl-delay: 1.5\n\nUser-agent: *\nDisallow: /";
        let rules = RobotsRules::from_response(200, body, "spindle/0.1 (+https://example.com)");
        assert!(rules.allows(&url("http://a/public")));
        assert!(!rules.allows(&url("http://a/private/x")));
        assert_eq!(rules.crawl_delay(), Some(Duration::from_millis(1500)));
        let other = RobotsRules::from_response(200, body, "otherbot");
        assert!(!other.allows(&url("http://a/public")));
    }

    #[test]
    fn origin_and_location() {
        assert_eq!(
            origin(&url("http://A.test:8080/x?y#z")),
            "http://a.test:8080"
        );
        assert_eq!(origin(&url("https://a.test/x")), "https://a.test");
        assert_eq!(
            robots_url(&url("http://u:p@a.test:81/x/y?q#f")).as_str(),
            "http://a.test:81/robots.txt"
        );
    }
}
