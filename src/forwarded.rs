//! Who the client is and which URL it used, for servers behind a reverse proxy: from a peer in
//! `trusted_proxies`, the `Forwarded` (RFC 7239) or `X-Forwarded-For/-Proto/-Host` headers
//! name the client's address, scheme and host; from anyone else they are ignored. A layer puts
//! the answer ([`Client`]) in each request's extensions for the auth layer (realm, lockout) and
//! the logs, and makes `Location`/`Link` absolute when a proxy named the external URL.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Uri};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

/// One entry of `trusted_proxies`: an address (`10.0.0.5`) or a network (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedNet(IpNet);

impl std::str::FromStr for TrustedNet {
    type Err = String;
    fn from_str(s: &str) -> Result<TrustedNet, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<IpNet>() {
            // `10.1.2.3/8` is most likely a typo for `10.0.0.0/8`; say so rather than guess.
            if net.trunc() != net {
                return Err(format!(
                    "`{s}` has host bits set; did you mean `{}`?",
                    net.trunc()
                ));
            }
            return Ok(TrustedNet(net));
        }
        s.parse::<IpAddr>()
            .map(|a| TrustedNet(IpNet::from(a)))
            .map_err(|_| format!("`{s}` is not an IP address or CIDR network (10.0.0.0/8)"))
    }
}

impl<'de> serde::Deserialize<'de> for TrustedNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<TrustedNet, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What the layer needs: whom to believe, and whether this server itself speaks TLS.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    trusted: Arc<[TrustedNet]>,
    tls: bool,
}

/// The client of one request as far as this server can tell.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// The peer's address, or the address a trusted proxy reports for the client.
    pub ip: Option<IpAddr>,
    https: bool,
    /// A plain `host[:port]` (anything else is dropped: it is echoed into headers).
    host: Option<String>,
    /// The scheme or host came from a trusted proxy's headers.
    forwarded: bool,
}

/// A proxy chain longer than this is not believed beyond this many hops (bounds the work).
const MAX_HOPS: usize = 32;

impl Forwarding {
    pub fn new(trusted: Vec<TrustedNet>, tls: bool) -> Forwarding {
        Forwarding {
            trusted: trusted.into(),
            tls,
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        // An IPv4 peer on a dual-stack socket arrives as `::ffff:a.b.c.d`.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.trusted.iter().any(|n| n.0.contains(&ip))
    }

    /// Decide who the client is from the peer address and the request head.
    pub fn resolve(&self, peer: Option<IpAddr>, headers: &HeaderMap, uri: &Uri) -> Client {
        // HTTP/2 has no Host header; its `:authority` arrives in the URI.
        let host = header_values(headers, &header::HOST)
            .next()
            .or_else(|| uri.authority().map(|a| a.as_str().to_owned()))
            .filter(|h| valid_host(h));
        let mut client = Client {
            ip: peer,
            https: self.tls,
            host,
            forwarded: false,
        };
        match peer {
            Some(p) if self.trusts(p) => {}
            _ => return client,
        }
        let hop = match forwarded_elements(headers) {
            Some(elements) => self.walk(elements),
            None => self.walk(x_forwarded(headers)),
        };
        if let Some(hop) = hop {
            if hop.ip.is_some() {
                client.ip = hop.ip;
            }
            if let Some(https) = hop.https {
                client.https = https;
                client.forwarded = true;
            }
            if let Some(h) = hop.host {
                client.host = Some(h);
                client.forwarded = true;
            }
        }
        client
    }

    /// Each proxy appends the hop it received to the right. Walk from the right while the
    /// sender of a hop is trusted: the first untrusted address is the client, and that hop's
    /// scheme and host are what the client asked for. Hops further left are the client's
    /// own claims and are not believed.
    fn walk(&self, hops: Vec<Hop>) -> Option<Hop> {
        let mut chosen = None;
        for hop in hops.into_iter().rev().take(MAX_HOPS) {
            let trusted = hop.ip.is_some_and(|ip| self.trusts(ip));
            chosen = Some(hop);
            if !trusted {
                break;
            }
        }
        chosen
    }
}

impl Client {
    pub fn scheme(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    /// The `host[:port]` the client used, if it named a valid one.
    pub fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }

    /// `scheme://host[:port]` the client used (`localhost` when it named no valid host).
    pub fn origin(&self) -> String {
        format!(
            "{}://{}",
            self.scheme(),
            self.host.as_deref().unwrap_or("localhost")
        )
    }
}

/// What one proxy hop says about the connection it received.
#[derive(Debug, Default, PartialEq)]
struct Hop {
    ip: Option<IpAddr>,
    https: Option<bool>,
    host: Option<String>,
}

/// Every value of `name`, split on commas, in order (repeated headers count as one list).
fn header_values<'a>(
    headers: &'a HeaderMap,
    name: &'a HeaderName,
) -> impl Iterator<Item = String> + 'a {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Hops from `X-Forwarded-For`, with `X-Forwarded-Proto` and `-Host` (set once, by the proxy
/// facing the client) given to the hop nearest the client.
fn x_forwarded(headers: &HeaderMap) -> Vec<Hop> {
    const XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    const PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
    const HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
    let mut hops: Vec<Hop> = header_values(headers, &XFF)
        .map(|a| Hop {
            ip: parse_node(&a),
            ..Hop::default()
        })
        .collect();
    let https = header_values(headers, &PROTO)
        .next()
        .and_then(|p| proto(&p));
    let host = header_values(headers, &HOST)
        .next()
        .filter(|h| valid_host(h));
    if hops.is_empty() && (https.is_some() || host.is_some()) {
        hops.push(Hop::default());
    }
    // The walk keeps the scheme and host of the hop it stops at; when a chain of proxies
    // each set the same single value, every hop says the same thing.
    for hop in &mut hops {
        hop.https = https;
        hop.host.clone_from(&host);
    }
    hops
}

/// RFC 7239 `Forwarded` elements; `None` when the header is absent or malformed (then the
/// `X-Forwarded-*` headers are used).
fn forwarded_elements(headers: &HeaderMap) -> Option<Vec<Hop>> {
    let mut hops = Vec::new();
    for value in headers.get_all(header::FORWARDED) {
        let value = value.to_str().ok()?;
        for element in split_unquoted(value, b',') {
            let mut hop = Hop::default();
            for pair in split_unquoted(element, b';') {
                let pair = pair.trim();
                if pair.is_empty() {
                    continue;
                }
                let (name, raw) = pair.split_once('=')?;
                let v = unquote(raw.trim())?;
                match name.trim().to_ascii_lowercase().as_str() {
                    "for" => hop.ip = parse_node(&v),
                    "proto" => hop.https = proto(&v),
                    "host" => hop.host = Some(v).filter(|h| valid_host(h)),
                    _ => {}
                }
            }
            hops.push(hop);
        }
    }
    (!hops.is_empty()).then_some(hops)
}

/// Split on `sep` outside double quotes (a quoted `for="[::1]:80"` holds colons and may hold
/// commas).
fn split_unquoted(s: &str, sep: u8) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, b) in s.bytes().enumerate() {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            _ if b == sep && !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// A token or a quoted-string (RFC 7230), unescaped.
fn unquote(v: &str) -> Option<String> {
    let Some(inner) = v.strip_prefix('"') else {
        return (!v.contains('"')).then(|| v.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' { chars.next()? } else { c });
    }
    Some(out)
}

/// A node: `192.0.2.1`, `192.0.2.1:80`, `2001:db8::1`, `[2001:db8::1]:80`; `unknown` and
/// obfuscated names (`_hidden`) give no address.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip());
    }
    s.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

fn proto(p: &str) -> Option<bool> {
    match p.to_ascii_lowercase().as_str() {
        "https" => Some(true),
        "http" => Some(false),
        _ => None,
    }
}

/// Only a plain `host[:port]` is echoed back into challenges and URLs.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
}

/// The layer: resolve the client, hand it on in the extensions, and when a trusted proxy named
/// the external scheme or host, make the relative `Location` and `Link` URLs of the answer
/// absolute with it (what the proxy says the client used, as Distribution does).
pub async fn layer(State(fwd): State<Forwarding>, mut req: Request, next: Next) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let client = fwd.resolve(peer, req.headers(), req.uri());
    let origin = client.forwarded.then(|| client.origin());
    req.extensions_mut().insert(client);
    let mut resp = next.run(req).await;
    if let Some(origin) = origin {
        absolutize(resp.headers_mut(), &origin);
    }
    resp
}

fn absolutize(headers: &mut HeaderMap, origin: &str) {
    let rewrite = |v: &HeaderValue, prefix: &str| -> Option<HeaderValue> {
        let s = v.to_str().ok()?;
        let rest = s.strip_prefix(prefix)?;
        // `//host/…` is already a network-path reference.
        if !rest.starts_with('/') || rest.starts_with("//") {
            return None;
        }
        HeaderValue::from_str(&format!("{prefix}{origin}{rest}")).ok()
    };
    if let Some(v) = headers.get(header::LOCATION).and_then(|v| rewrite(v, "")) {
        headers.insert(header::LOCATION, v);
    }
    let links: Vec<HeaderValue> = headers
        .get_all(header::LINK)
        .iter()
        .map(|v| rewrite(v, "<").unwrap_or_else(|| v.clone()))
        .collect();
    if !links.is_empty() {
        headers.remove(header::LINK);
        for v in links {
            headers.append(header::LINK, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(trusted: &[&str]) -> Forwarding {
        Forwarding::new(
            trusted.iter().map(|t| t.parse().expect("net")).collect(),
            false,
        )
    }

    fn head(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    const URI: &str = "/v2/";

    #[test]
    fn trusted_net_parsing() {
        assert!("10.0.0.0/8".parse::<TrustedNet>().is_ok());
        assert!("127.0.0.1".parse::<TrustedNet>().is_ok());
        assert!("::1".parse::<TrustedNet>().is_ok());
        assert!("fd00::/8".parse::<TrustedNet>().is_ok());
        let e = "10.1.2.3/8".parse::<TrustedNet>().expect_err("host bits");
        assert!(e.contains("10.0.0.0/8"), "{e}");
        assert!("10.0.0.0/33".parse::<TrustedNet>().is_err());
        assert!("proxy.lab".parse::<TrustedNet>().is_err());
    }

    #[test]
    fn untrusted_peer_headers_are_ignored() {
        let h = head(&[
            ("host", "registry.lab:5000"),
            ("x-forwarded-for", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("forwarded", "for=10.8.8.8;proto=https;host=evil.example"),
        ]);
        let c = fwd(&["10.0.0.0/8"]).resolve(ip("192.0.2.7"), &h, &URI.parse().expect("uri"));
        assert_eq!(c.ip, ip("192.0.2.7"));
        assert_eq!(c.origin(), "http://registry.lab:5000");
        assert!(!c.forwarded);
    }

    #[test]
    fn x_forwarded_from_trusted_proxy() {
        let h = head(&[
            ("host", "127.0.0.1:5000"),
            // The client claimed 1.2.3.4; the proxy appended the address it saw.
            ("x-forwarded-for", "1.2.3.4, 198.51.100.20"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "registry.example:8443"),
        ]);
        let c = fwd(&["127.0.0.1"]).resolve(ip("127.0.0.1"), &h, &URI.parse().expect("uri"));
        assert_eq!(
            c.ip,
            ip("198.51.100.20"),
            "the client's own claim is not believed"
        );
        assert_eq!(c.origin(), "https://registry.example:8443");
        assert!(c.forwarded);
        // Two trusted proxies in a row: skip both.
        let h = head(&[("x-forwarded-for", "198.51.100.20, 10.0.0.2")]);
        let c = fwd(&["127.0.0.1", "10.0.0.0/8"]).resolve(
            ip("::ffff:127.0.0.1"),
            &h,
            &URI.parse().expect("uri"),
        );
        assert_eq!(c.ip, ip("198.51.100.20"));
        assert!(!c.forwarded, "no scheme or host was forwarded");
        // A bad host or scheme is dropped, not echoed.
        let h = head(&[
            ("host", "a.lab"),
            ("x-forwarded-proto", "gopher"),
            ("x-forwarded-host", "x\"y"),
        ]);
        let c = fwd(&["127.0.0.1"]).resolve(ip("127.0.0.1"), &h, &URI.parse().expect("uri"));
        assert_eq!(c.origin(), "http://a.lab");
    }

    #[test]
    fn rfc7239_forwarded_wins() {
        let h = head(&[
            ("x-forwarded-for", "203.0.113.1"),
            (
                "forwarded",
                "for=1.2.3.4;host=fake, for=\"[2001:db8::7]:4711\";proto=https;host=\"r.example\"",
            ),
            ("forwarded", "for=10.0.0.2"),
        ]);
        let c = fwd(&["10.0.0.0/8"]).resolve(ip("10.0.0.1"), &h, &URI.parse().expect("uri"));
        assert_eq!(c.ip, ip("2001:db8::7"));
        assert_eq!(c.origin(), "https://r.example");
        // Malformed: fall back to X-Forwarded-For.
        let h = head(&[
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=\"unterminated"),
        ]);
        let c = fwd(&["10.0.0.0/8"]).resolve(ip("10.0.0.1"), &h, &URI.parse().expect("uri"));
        assert_eq!(c.ip, ip("203.0.113.1"));
        assert_eq!(parse_node("unknown"), None);
        assert_eq!(parse_node("_hidden"), None);
        assert_eq!(parse_node("192.0.2.1:80"), ip("192.0.2.1"));
    }

    #[test]
    fn http2_authority_is_the_host() {
        let uri: Uri = "https://r.lab:5000/v2/".parse().expect("uri");
        let c = Forwarding::new(Vec::new(), true).resolve(None, &HeaderMap::new(), &uri);
        assert_eq!(c.origin(), "https://r.lab:5000");
    }

    #[test]
    fn relative_urls_become_absolute() {
        let mut h = head(&[
            ("location", "/v2/a/blobs/uploads/1"),
            ("link", "</v2/_catalog?n=1&last=a>; rel=\"next\""),
        ]);
        absolutize(&mut h, "https://r.example");
        assert_eq!(h["location"], "https://r.example/v2/a/blobs/uploads/1");
        assert_eq!(
            h["link"],
            "<https://r.example/v2/_catalog?n=1&last=a>; rel=\"next\""
        );
        let mut h = head(&[("location", "https://elsewhere/x")]);
        absolutize(&mut h, "https://r.example");
        assert_eq!(h["location"], "https://elsewhere/x");
    }
}
