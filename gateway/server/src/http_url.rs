//! HttpUrl: a plain `http://host[:port][/path]` URL a person typed, parsed once by hyper's
//! parser and checked the same way wherever one is taken: a webhook's address (the config) and
//! the client's `--url`. A user or password is refused (it would be sent nowhere and shown in
//! logs), and so is anything after the host but a port from 1 to 65535: hyper has no
//! `port_u16` for `box:7O70` or `box:99999`, which went to port 80 (a token with it), and a
//! password holding `/` ends the authority early (`me:pa/ss@relay` is host `me`, "port" `pa`).

/// The parts of a checked URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// The host as written (an IPv6 one in brackets).
    pub host: String,
    /// The port (80 when the URL names none).
    pub port: u16,
    /// The authority as written (`host[:port]`): a request's `Host` header.
    pub authority: String,
    /// The path and query, `/` when the URL has none (a query right after the host is the
    /// root's: a request line of `?topic=x` is refused by every server).
    pub path: String,
}

impl HttpUrl {
    /// Parses `url`; the error says what is wrong with it, to follow the URL in a message.
    pub fn parse(url: &str) -> Result<HttpUrl, &'static str> {
        let uri: hyper::Uri = url.parse().map_err(|_| "is not a URL")?;
        if uri.scheme_str() != Some("http") {
            return Err("is not a plain http:// URL (https: put a TLS proxy in front)");
        }
        let authority = uri.authority().ok_or("has no host")?;
        if authority.as_str().contains('@') {
            return Err("carries a user or password (put a secret in the path)");
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("has no host");
        }
        let port = match &authority.as_str()[host.len()..] {
            "" => 80,
            rest => rest
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or("has a port that is not a number from 1 to 65535")?,
        };
        let path = match uri.path_and_query().map(|p| p.as_str()) {
            None | Some("") => "/".to_string(),
            Some(p) if p.starts_with('/') => p.to_string(),
            Some(p) => format!("/{p}"),
        };
        Ok(HttpUrl {
            host: host.to_string(),
            port,
            authority: authority.as_str().to_string(),
            path,
        })
    }

    /// `host:port`, to connect to.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_url_is_a_host_a_port_and_a_path() {
        let url = HttpUrl::parse("http://ntfy.local/topic?x=1").unwrap();
        assert_eq!(url.address(), "ntfy.local:80");
        assert_eq!(
            (url.authority.as_str(), url.path.as_str()),
            ("ntfy.local", "/topic?x=1")
        );
        let url = HttpUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (url.address().as_str(), url.path.as_str()),
            ("[::1]:8080", "/")
        );
        assert_eq!(
            HttpUrl::parse("http://h:1?topic=qs").unwrap().path,
            "/?topic=qs"
        );
        for bad in [
            "https://relay/hook",
            "relay/hook",
            "http:///y",
            "http://me:secret@relay/hook",
            "http://me:pa/ss@relay/hook",
            "http://box:7O70/hook",
            "http://box:99999/hook",
            "http://box:0/hook",
            "http://box:/hook",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
