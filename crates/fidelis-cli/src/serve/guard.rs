//! Who may drive the server: one middleware layer in front of every route, the page included.
//!
//! In order, a request is refused with
//! 1. `403` when its `Host` header (and the authority of an absolute request URI) is not an
//!    address this server is reached at: the loopback names `127.0.0.1`, `localhost` and
//!    `[::1]`, the `--host` address, and `--allowed-host` names, each with the port served. A
//!    page of another site that rebinds its own DNS name to 127.0.0.1 still sends its own name
//!    as `Host`, so it cannot read the API (DNS-rebinding defence).
//! 2. `403` when it carries an `Origin` header that is not `http://` and such an address: a
//!    page of another site may send requests to a loopback port, and browsers mark them with
//!    their origin (CSRF defence; `Origin: null` is refused too).
//! 3. `401` when the server has a token and the request carries neither
//!    `Authorization: Bearer TOKEN` nor the cookie the page gets (see below).
//! 4. `408` when the handler, reading the body included, takes longer than the request
//!    timeout (the job itself runs on its own thread and is not bounded by it).
//!
//! The page and the token: `fidelis serve` prints `http://ADDR/?token=TOKEN`. A `GET /` with
//! the right `token` query parameter is answered with a redirect to `/` that sets the cookie
//! `fidelis_token_PORT=TOKEN` (`HttpOnly`, `SameSite=Strict`, `Path=/`), so the token leaves
//! the address bar and every later request of the page (its `fetch` calls, its download links)
//! carries it without any script seeing it. Other clients send the `Authorization` header.
//! Tokens are compared in constant time ([`same_secret`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::api::ApiError;

/// The host names every server answers to (with its port).
pub const LOOPBACK_NAMES: [&str; 3] = ["127.0.0.1", "localhost", "[::1]"];

/// The port a `Host` or `Origin` without one means (plain HTTP).
const DEFAULT_HTTP_PORT: u16 = 80;

/// The checks of one running server: the names and port it answers to, its token, and its
/// request timeout.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Host names (lowercase, IPv6 addresses in brackets) accepted in `Host` and `Origin`.
    names: Vec<String>,
    /// The port served (a `Host` must name it).
    port: u16,
    /// The token requests must carry, if any.
    token: Option<String>,
    /// The cookie that carries the token for the page (named per port: cookies do not tell
    /// ports apart, two servers on one machine must not overwrite each other's).
    cookie: String,
    /// How long a handler may take.
    request_timeout: Duration,
}

impl Guard {
    /// The guard of a server bound to `addr`: loopback names, `addr`'s own address and
    /// `extra_names` (host names or addresses, without port), with `token` if given.
    pub fn new(
        addr: SocketAddr,
        extra_names: &[String],
        token: Option<String>,
        request_timeout: Duration,
    ) -> Self {
        let mut names: Vec<String> = LOOPBACK_NAMES.iter().map(|n| n.to_string()).collect();
        if !addr.ip().is_unspecified() {
            names.push(match addr {
                SocketAddr::V4(a) => a.ip().to_string(),
                SocketAddr::V6(a) => format!("[{}]", a.ip()),
            });
        }
        names.extend(extra_names.iter().map(|n| n.to_ascii_lowercase()));
        names.dedup();
        Self {
            names,
            port: addr.port(),
            token,
            cookie: format!("fidelis_token_{}", addr.port()),
            request_timeout,
        }
    }

    /// Whether `authority` (`host[:port]`, as in a `Host` header) is this server's address.
    pub fn is_own_authority(&self, authority: &str) -> bool {
        split_authority(authority).is_some_and(|(host, port)| {
            port.unwrap_or(DEFAULT_HTTP_PORT) == self.port
                && self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
        })
    }

    /// Whether `origin` (an `Origin` header) is this server's own origin.
    pub fn is_own_origin(&self, origin: &str) -> bool {
        origin
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .and_then(|_| origin.get(7..))
            .is_some_and(|authority| self.is_own_authority(authority))
    }

    /// Whether the request carries the token (always true when there is none).
    fn is_authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.strip_prefix("Bearer "));
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == self.cookie)
            .map(|(_, value)| value);
        // Every candidate is compared, so the time does not tell which one came close.
        bearer
            .chain(cookies)
            .fold(false, |ok, given| same_secret(given, token) | ok)
    }

    /// The `303` to `/` that sets the token cookie, when `request` is `GET /?token=TOKEN`
    /// with the right token.
    fn token_redirect(&self, request: &Request) -> Option<Response> {
        let token = self.token.as_ref()?;
        if request.method() != axum::http::Method::GET || request.uri().path() != "/" {
            return None;
        }
        let Query(query) =
            Query::<std::collections::HashMap<String, String>>::try_from_uri(request.uri()).ok()?;
        if !same_secret(query.get("token")?, token) {
            return None;
        }
        let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", self.cookie);
        let cookie = HeaderValue::from_str(&cookie).ok()?;
        Some(
            (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, HeaderValue::from_static("/")),
                    (header::SET_COOKIE, cookie),
                    (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
                ],
            )
                .into_response(),
        )
    }

    /// Why the request is refused for its `Host` or `Origin`, or `None` when they are this
    /// server's.
    fn forbidden(&self, request: &Request) -> Option<ApiError> {
        let headers = request.headers();
        let host = headers.get(header::HOST).map(HeaderValue::to_str);
        match host {
            Some(Ok(host)) if self.is_own_authority(host) => {}
            Some(_) => {
                return Some(ApiError::forbidden(
                    "forbidden: the Host header is not this server's address (see \
                     --allowed-host)"
                        .into(),
                ));
            }
            None => return Some(ApiError::forbidden("forbidden: no Host header".into())),
        }
        if let Some(authority) = request.uri().authority()
            && !self.is_own_authority(authority.as_str())
        {
            return Some(ApiError::forbidden(
                "forbidden: the request names another host".into(),
            ));
        }
        let foreign = headers
            .get_all(header::ORIGIN)
            .iter()
            .any(|origin| !origin.to_str().is_ok_and(|o| self.is_own_origin(o)));
        foreign
            .then(|| ApiError::forbidden("forbidden: cross-origin requests are not served".into()))
    }
}

/// The middleware: refuses what [`Guard`] refuses (403, then 401), sets the token cookie on
/// `GET /?token=TOKEN`, and bounds the handler by the request timeout (408).
pub async fn check(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    if let Some(error) = guard.forbidden(&request) {
        return error.into_response();
    }
    if let Some(redirect) = guard.token_redirect(&request) {
        return redirect;
    }
    if !guard.is_authorized(request.headers()) {
        let mut response = ApiError::unauthorized(
            "unauthorized: this server needs its token (open the address `fidelis serve` \
             printed, or send Authorization: Bearer TOKEN)"
                .into(),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    match tokio::time::timeout(guard.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError {
            status: StatusCode::REQUEST_TIMEOUT,
            message: format!(
                "the request took longer than {} ms",
                guard.request_timeout.as_millis()
            ),
            extra: None,
        }
        .into_response(),
    }
}

/// A new token: 128 bits from `rand`'s thread-local CSPRNG, as 32 lowercase hex digits.
pub fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// An `--allowed-host` value as the guard compares it: a name or IPv4 address as given, an
/// IPv6 address in brackets; an error for anything with a port, a path or a space.
pub fn host_name(value: &str) -> anyhow::Result<String> {
    if let Ok(ip) = value.trim_matches(['[', ']']).parse::<std::net::Ipv6Addr>() {
        return Ok(format!("[{ip}]"));
    }
    let name_char = |c: char| c.is_ascii_alphanumeric() || ".-_".contains(c);
    if value.is_empty() || !value.chars().all(name_char) {
        anyhow::bail!(
            "--allowed-host {value:?}: give a host name or address without port (the port is \
             --port's)"
        );
    }
    Ok(value.to_ascii_lowercase())
}

/// `host` and `port` of `host[:port]`, the host of an IPv6 address in its brackets; `None`
/// when it is malformed.
fn split_authority(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, rest) = if authority.starts_with('[') {
        let end = authority.find(']')? + 1;
        authority.split_at(end)
    } else {
        match authority.find(':') {
            Some(i) => authority.split_at(i),
            None => (authority, ""),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match rest.strip_prefix(':') {
        None if rest.is_empty() => None,
        None => return None,
        Some(digits) => Some(digits.parse().ok()?),
    };
    Some((host, port))
}

/// Whether two secrets are equal, in time that depends on their lengths only: the bytes are
/// combined with XOR and OR over the whole length, with no early exit, and `black_box` keeps
/// the compiler from adding one. (A token's length is no secret: generated ones have 32.)
pub fn same_secret(given: &str, secret: &str) -> bool {
    let (a, b) = (given.as_bytes(), secret.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(addr: &str, extra: &[&str], token: Option<&str>) -> Guard {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Guard::new(
            addr.parse().unwrap(),
            &extra,
            token.map(String::from),
            Duration::from_secs(1),
        )
    }

    #[test]
    fn hosts_and_origins() {
        let g = guard("127.0.0.1:7860", &[], None);
        for ok in [
            "127.0.0.1:7860",
            "localhost:7860",
            "LOCALHOST:7860",
            "[::1]:7860",
        ] {
            assert!(g.is_own_authority(ok), "{ok}");
            assert!(g.is_own_origin(&format!("http://{ok}")), "{ok}");
        }
        for bad in [
            "evil.example:7860",
            "127.0.0.1:7861",
            "127.0.0.1",
            "localhost.evil.example:7860",
            "127.0.0.1:7860:1",
            "127.0.0.1:7860/x",
            "[::1]7860",
            ":7860",
            "",
        ] {
            assert!(!g.is_own_authority(bad), "{bad}");
        }
        for bad in [
            "null",
            "https://127.0.0.1:7860",
            "http://evil.example:7860",
            "http://127.0.0.1:7860/",
            "http://",
        ] {
            assert!(!g.is_own_origin(bad), "{bad}");
        }
        let remote = guard("0.0.0.0:80", &["fidelis.lan"], None);
        assert!(remote.is_own_authority("fidelis.lan"));
        assert!(remote.is_own_authority("fidelis.lan:80"));
        assert!(!remote.is_own_authority("0.0.0.0"));
        let v6 = guard("[fd00::5]:9000", &[], None);
        assert!(v6.is_own_authority("[fd00::5]:9000"));
        assert_eq!(host_name("Fidelis.LAN").unwrap(), "fidelis.lan");
        assert_eq!(host_name("fd00::5").unwrap(), "[fd00::5]");
        assert_eq!(host_name("[fd00::5]").unwrap(), "[fd00::5]");
        for bad in ["fidelis.lan:7860", "", "a b", "x/y"] {
            assert!(host_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_from_the_header_or_the_cookie() {
        let g = guard("127.0.0.1:7860", &[], Some("s3cret-token-0123"));
        let headers = |pairs: &[(header::HeaderName, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(k, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert!(!g.is_authorized(&headers(&[])));
        assert!(g.is_authorized(&headers(&[(
            header::AUTHORIZATION,
            "Bearer s3cret-token-0123"
        )])));
        assert!(!g.is_authorized(&headers(&[(
            header::AUTHORIZATION,
            "Bearer s3cret-token-0124"
        )])));
        assert!(g.is_authorized(&headers(&[(
            header::COOKIE,
            "a=b; fidelis_token_7860=s3cret-token-0123"
        )])));
        assert!(!g.is_authorized(&headers(&[(
            header::COOKIE,
            "fidelis_token_7861=s3cret-token-0123"
        )])));
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
    }
}
