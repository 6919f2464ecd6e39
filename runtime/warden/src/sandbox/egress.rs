//! Egress rules: which HTTP requests may leave a tool's sandbox. Pure matching, no wasmtime.
//!
//! A request leaves only if one rule matches its scheme, host, port, path and method. This is
//! decided before any DNS query; afterwards the address the name resolves to is checked too
//! (`check_address`), so a listed name cannot point the host at an internal service.
//!
//! A request is first brought into one normal form (`Target::from_uri`): the rules, the
//! policies, the record and the upstream all see that same form, so no layer can read a
//! request differently from the one that decided on it.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Longest URL (authority, path and query) a tool may request. Longer ones are refused before
/// any other check, so nothing derived from a request (reasons, records) can be large.
pub const MAX_URL_BYTES: usize = 2048;

/// One `[[egress]]` entry of a manifest, e.g. `url = "https://api.example.com/v1/*"`.
#[derive(Debug, Clone, Serialize)]
pub struct EgressRule {
    /// The rule as written, for reasons and `tool inspect`.
    pub url: String,
    pub methods: Vec<String>,
    /// Allow loopback, private and link-local addresses (never cloud metadata or 0.0.0.0).
    pub allow_private: bool,
    /// The credential (a name defined by the deployment) the host adds to matching requests.
    pub credential: Option<String>,
    #[serde(skip)]
    scheme: String,
    #[serde(skip)]
    host: HostPattern,
    #[serde(skip)]
    port: u16,
    #[serde(skip)]
    path: String,
}

#[derive(Debug, Clone)]
enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`, not `example.com` itself.
    Suffix(String),
}

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

impl EgressRule {
    pub fn new(
        url: &str,
        methods: &[String],
        allow_private: bool,
        credential: Option<String>,
    ) -> Result<EgressRule, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("url `{url}` must start with http:// or https://"))?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("url `{url}`: scheme must be http or https"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, "/*"),
        };
        if authority.contains('@') || path.contains(['?', '#']) {
            return Err(format!(
                "url `{url}`: no user info, query or fragment in a rule"
            ));
        }
        let (host, port) =
            split_host_port(authority).ok_or_else(|| format!("url `{url}`: bad host or port"))?;
        let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
        let host = normalize_host(host);
        let host = match host.strip_prefix("*.") {
            Some(suffix) if valid_host(suffix) => HostPattern::Suffix(format!(".{suffix}")),
            None if valid_host(&host) => HostPattern::Exact(host.clone()),
            _ => {
                return Err(format!(
                    "url `{url}`: host must be a name, an IP or `*.suffix`"
                ));
            }
        };
        // The rule's path in the form requests are brought to, so that both sides compare alike.
        let path = normalize_path(path).map_err(|e| format!("url `{url}`: {e}"))?;
        let methods = methods
            .iter()
            .map(|m| normalize_method(m))
            .collect::<Result<Vec<_>, _>>()?;
        if methods.is_empty() {
            return Err(format!("url `{url}`: methods must not be empty"));
        }
        Ok(EgressRule {
            url: url.to_string(),
            methods,
            allow_private,
            credential,
            scheme: scheme.to_string(),
            host,
            port,
            path,
        })
    }

    /// The origin of a rule for one exact host (None for `*.suffix` rules).
    pub fn origin(&self) -> Option<Origin> {
        match &self.host {
            HostPattern::Exact(host) => Some(Origin {
                scheme: self.scheme.clone(),
                host: host.clone(),
                port: self.port,
            }),
            HostPattern::Suffix(_) => None,
        }
    }

    /// The rule's path in normal form: `/v1/*` (a prefix) or `/v1/status` (exact).
    pub fn path(&self) -> &str {
        &self.path
    }

    fn matches_host(&self, host: &str) -> bool {
        match &self.host {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// `scheme://host:port`: where a credential may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Origin {
    pub fn parse(text: &str) -> Result<Origin, String> {
        let rule = EgressRule::new(text, &["GET".into()], false, None)?;
        if rule.path != "/*" && rule.path != "/" {
            return Err(format!(
                "`{text}` must be an origin like https://host[:port], without a path"
            ));
        }
        rule.origin()
            .ok_or_else(|| format!("`{text}` must name one host"))
    }
}

/// An outgoing request in its normal form: what the rules match, what the policies are asked
/// about, what is recorded, and what is sent (method, `host` header and request line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// One of `METHODS`, uppercase.
    pub method: String,
    pub scheme: String,
    /// Lowercase, without a trailing dot; an IP in its canonical text, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path without the query, normalised by `normalize_path`.
    pub path: String,
    /// The query as the tool wrote it (rules do not look at it; it is not recorded).
    pub query: Option<String>,
}

impl Target {
    /// Brings a request into its normal form, or says why it has none.
    pub fn from_uri(method: &str, uri: &http::Uri) -> Result<Target, String> {
        let length = uri.authority().map_or(0, |a| a.as_str().len())
            + uri.path_and_query().map_or(0, |p| p.as_str().len());
        if length > MAX_URL_BYTES {
            return Err(format!(
                "the URL is {length} bytes long, more than the limit of {MAX_URL_BYTES}"
            ));
        }
        let method = normalize_method(method)?;
        let scheme = uri
            .scheme_str()
            .ok_or("request has no scheme")?
            .to_ascii_lowercase();
        let authority = uri.authority().ok_or("request has no host")?;
        if authority.as_str().contains('@') {
            return Err("user info in a request URL is not allowed".into());
        }
        // Split here rather than by `http`, which reads a port it cannot parse (`:99999`) as
        // no port at all.
        let (host, port) = split_host_port(authority.as_str())
            .ok_or_else(|| format!("authority `{authority}` has a bad port"))?;
        let host = normalize_host(host);
        if !valid_host(&host) {
            return Err(format!("host `{host}` is not a valid name or IP address"));
        }
        let port = port.unwrap_or(default_port(&scheme));
        Ok(Target {
            method,
            host,
            scheme,
            port,
            path: normalize_path(uri.path())?,
            query: uri.query().map(str::to_string),
        })
    }

    pub fn origin(&self) -> Origin {
        Origin {
            scheme: self.scheme.clone(),
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// `host[:port]` (the port only when not the scheme's default): the `host` header sent.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default_port(&self.scheme) {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    /// `/path?query`: the request line's target sent upstream.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }

    /// `scheme://host:port/path`, as shown in logs (no query: it may carry data).
    pub fn display(&self) -> String {
        Destination::of(self).url()
    }
}

/// Where a request went, as records keep it: its normal form's scheme, host, port and path
/// (no query: it may carry data).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Destination {
    pub scheme: String,
    pub host: String,
    /// Records written before this type (and the count of omitted requests) may hold none.
    #[serde(default, deserialize_with = "null_as_zero")]
    pub port: u16,
    pub path: String,
}

fn null_as_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    Ok(Option::<u16>::deserialize(d)?.unwrap_or(0))
}

impl Destination {
    pub fn of(target: &Target) -> Destination {
        Destination {
            scheme: target.scheme.clone(),
            host: target.host.clone(),
            port: target.port,
            path: target.path.clone(),
        }
    }

    /// `scheme://host:port/path`.
    pub fn url(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

/// A method in the one case that is matched and sent: lowercase `get` is sent as `GET`, so
/// that what the rule allowed is what the upstream receives. Anything not in `METHODS` is
/// refused (no rule can name it).
pub fn normalize_method(method: &str) -> Result<String, String> {
    let upper = method.to_ascii_uppercase();
    if METHODS.contains(&upper.as_str()) {
        Ok(upper)
    } else {
        Err(format!(
            "method `{}` is not one of {}",
            clip(method, 32),
            METHODS.join(", ")
        ))
    }
}

/// The one normal form of a path, for rules and requests alike. Servers decode and resolve
/// paths before routing; a rule or policy that matched the raw text could be walked around
/// (`/v1/%61dmin` is `/v1/admin`, `/v1/public/../admin`, `/v1/admin;x`, `/v1//admin`). So:
/// - `%XX` of an unreserved character is decoded; other escapes are kept, in uppercase;
/// - escaped separators (`%2F`, `%5C`), `%3B`, escaped control bytes and double encoding
///   (`%25` followed by two hex digits) are refused: no single meaning;
/// - `;` parameters, `\`, `.` and `..` segments (also when escaped) are refused;
/// - runs of `/` become one (servers that merge them would otherwise see another path);
/// - characters outside RFC 3986 `pchar` must be escaped by the tool; an empty path is `/`.
pub fn normalize_path(raw: &str) -> Result<String, String> {
    if raw.is_empty() {
        return Ok("/".into());
    }
    if !raw.starts_with('/') {
        return Err(format!("path `{}` does not start with `/`", clip(raw, 64)));
    }
    let refuse = |what: &str| Err(format!("path `{}` {what}", clip(raw, 256)));
    let mut decoded = String::with_capacity(raw.len());
    let mut rest = raw.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'%' => {
                let Some(d) = hex_pair(rest.first(), rest.get(1)) else {
                    return refuse("has a `%` not followed by two hex digits");
                };
                rest = rest.get(2..).unwrap_or_default();
                if unreserved(d) {
                    decoded.push(char::from(d));
                } else if d == b'%' && hex_pair(rest.first(), rest.get(1)).is_some() {
                    return refuse("is encoded twice (`%25` followed by hex digits)");
                } else if matches!(d, b'/' | b'\\' | b';') {
                    return refuse("contains an encoded `/`, `\\` or `;`");
                } else if d < 0x20 || d == 0x7f {
                    return refuse("contains an encoded control character");
                } else {
                    decoded.push_str(&format!("%{d:02X}"));
                }
            }
            b';' => return refuse("has `;` parameters"),
            b'\\' => return refuse("contains `\\`"),
            b'/' | b':' | b'@' | b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b','
            | b'=' => decoded.push(char::from(b)),
            b if unreserved(b) => decoded.push(char::from(b)),
            _ => return refuse("contains a character that must be percent-encoded"),
        }
    }
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut path = String::with_capacity(decoded.len());
    for (i, segment) in segments.into_iter().enumerate() {
        match segment {
            "." | ".." => return refuse("has a `.` or `..` segment"),
            // An empty segment: `//` collapses; a trailing `/` stays.
            "" if i != last => {}
            _ => {
                path.push('/');
                path.push_str(segment);
            }
        }
    }
    Ok(path)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex_pair(high: Option<&u8>, low: Option<&u8>) -> Option<u8> {
    let digit = |b: Option<&u8>| char::from(*b?).to_digit(16);
    Some((digit(high)? * 16 + digit(low)?) as u8)
}

/// At most `max` bytes of `text` (cut at a character boundary, marked with `…`): what is
/// kept of text a tool chose, in reasons and records.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text.get(..end).unwrap_or_default())
}

/// Finds the rule that allows `target`, or says which check failed.
pub fn match_rule<'a>(rules: &'a [EgressRule], target: &Target) -> Result<&'a EgressRule, String> {
    let by_host: Vec<&EgressRule> = rules
        .iter()
        .filter(|r| r.matches_host(&target.host))
        .collect();
    if by_host.is_empty() {
        return Err(format!("host `{}` is not in any egress rule", target.host));
    }
    let by_origin: Vec<&EgressRule> = by_host
        .into_iter()
        .filter(|r| r.scheme == target.scheme && r.port == target.port)
        .collect();
    if by_origin.is_empty() {
        return Err(format!(
            "no egress rule allows {}://{}:{}",
            target.scheme, target.host, target.port
        ));
    }
    let by_path: Vec<&EgressRule> = by_origin
        .into_iter()
        .filter(|r| glob_match(&r.path, &target.path))
        .collect();
    if by_path.is_empty() {
        return Err(format!(
            "path `{}` is not allowed for host `{}`",
            target.path, target.host
        ));
    }
    by_path
        .iter()
        .find(|r| r.methods.contains(&target.method))
        .copied()
        .ok_or_else(|| {
            format!(
                "method {} is not allowed for {}",
                target.method,
                target.display()
            )
        })
}

/// Cloud metadata and credential endpoints: never reachable from a tool, whatever its rule
/// says (`allow_private` included). The one list of them; each names the provider's document.
const METADATA: [(IpAddr, &str); 10] = [
    // AWS "Instance metadata service" (also GCP, Azure IMDS, OpenStack, Oracle OCI IMDS v2,
    // DigitalOcean: all answer on this link-local address).
    (v4(169, 254, 169, 254), "instance metadata"),
    // AWS EC2 User Guide, "Access instance metadata": the IPv6 IMDS endpoint on Nitro.
    (v6(0xfd00, 0xec2, 0x254), "AWS instance metadata (IPv6)"),
    // Microsoft Learn, "What is IP address 168.63.129.16?": Azure WireServer (VM agent,
    // extensions and their settings).
    (v4(168, 63, 129, 16), "Azure WireServer"),
    // AWS ECS Developer Guide, "Task IAM role" / "Task metadata endpoint v2": the task's
    // credentials at 169.254.170.2$AWS_CONTAINER_CREDENTIALS_RELATIVE_URI.
    (v4(169, 254, 170, 2), "AWS ECS task credentials"),
    // AWS EKS User Guide, "EKS Pod Identity": the agent on 169.254.170.23 and fd00:ec2::23.
    (v4(169, 254, 170, 23), "AWS EKS Pod Identity"),
    (v6(0xfd00, 0xec2, 0x23), "AWS EKS Pod Identity (IPv6)"),
    // Alibaba Cloud ECS documentation, "Instance metadata": 100.100.100.200.
    (v4(100, 100, 100, 200), "Alibaba Cloud instance metadata"),
    // Oracle Cloud Infrastructure documentation, "Getting instance metadata" (the legacy
    // endpoint 192.0.0.192 beside 169.254.169.254).
    (v4(192, 0, 0, 192), "Oracle Cloud instance metadata"),
    // Google Cloud documentation, "About VM metadata": the metadata server over IPv6.
    (v6(0xfd20, 0xce, 0x254), "Google Cloud metadata (IPv6)"),
    // Oracle Cloud Infrastructure documentation, "Getting instance metadata": fd00:c1::a9fe:a9fe.
    (
        IpAddr::V6(Ipv6Addr::new(0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe)),
        "Oracle Cloud instance metadata (IPv6)",
    ),
];

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// `first:second::last`, the shape of most IPv6 metadata endpoints.
const fn v6(first: u16, second: u16, last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(first, second, 0, 0, 0, 0, 0, last))
}

/// Whether the host may connect to `ip` for a request allowed by a rule with `allow_private`.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    if let Some((_, name)) = METADATA.iter().find(|(m, _)| *m == ip) {
        return Err(format!("{ip} is a cloud metadata address ({name})"));
    }
    let class = match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    };
    match class {
        AddressClass::Public => Ok(()),
        AddressClass::Loopback | AddressClass::Private | AddressClass::LinkLocal
            if allow_private =>
        {
            Ok(())
        }
        class => Err(format!("{ip} is a {} address", class.name())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    /// Unspecified, broadcast, multicast, reserved: never reachable from a tool.
    Unroutable,
}

impl AddressClass {
    fn name(self) -> &'static str {
        match self {
            AddressClass::Public => "public",
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::Unroutable => "non-routable",
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        // RFC 1918 and carrier-grade NAT (100.64/10).
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        AddressClass::Unroutable
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    let [first, ..] = ip.segments();
    if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unique_local() {
        AddressClass::Private
    } else if ip.is_unicast_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_unspecified()
        || ip.is_multicast()
        || first == 0
        || first == 0x0064
        || first == 0x2002
    {
        // Also IPv4-compatible (::a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 addresses, which
        // can embed any IPv4 address. (IPv4-mapped ones were turned into IPv4 above.)
        AddressClass::Unroutable
    } else {
        AddressClass::Public
    }
}

/// Lowercase, without brackets or one trailing dot; an IP address in its canonical text, so
/// that `[0:0::1]` and `::1` are the same host.
fn normalize_host(host: &str) -> String {
    let host = host.strip_prefix('[').unwrap_or(host);
    let host = host.strip_suffix(']').unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    }
}

/// An IP address, or a DNS name whose last label is not numeric: resolvers read names like
/// `2130706433` or `0x7f.1` as addresses, which a rule naming a host must not allow.
fn valid_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let labels_ok = !host.is_empty()
        && host
            .split('.')
            .all(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last.bytes().skip(2).all(|b| b.is_ascii_hexdigit()));
    labels_ok && !numeric
}

fn split_host_port(authority: &str) -> Option<(&str, Option<u16>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        return match after.strip_prefix(':') {
            Some(port) => Some((host, Some(port.parse().ok()?))),
            None if after.is_empty() => Some((host, None)),
            None => None,
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((authority, None)),
    }
}

/// `*` matches any run of characters (including `/`); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let mut middles: Vec<&str> = parts.collect();
    let Some(last) = middles.pop() else {
        // No `*`: the whole text must be the pattern.
        return rest.is_empty();
    };
    let Some(inner) = rest.strip_suffix(last) else {
        return false;
    };
    rest = inner;
    for middle in middles {
        match rest.split_once(middle) {
            Some((_, after)) => rest = after,
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(url: &str, methods: &[&str]) -> EgressRule {
        let methods: Vec<String> = methods.iter().map(|m| m.to_string()).collect();
        EgressRule::new(url, &methods, false, None).unwrap()
    }

    fn target(method: &str, url: &str) -> Target {
        Target::from_uri(method, &url.parse().unwrap()).unwrap()
    }

    #[test]
    fn matches_scheme_host_port_path_and_method() {
        let rules = [rule("https://api.example.com/v1/*", &["GET", "POST"])];
        assert!(
            match_rule(
                &rules,
                &target("GET", "https://api.example.com/v1/issues?q=1")
            )
            .is_ok()
        );
        assert!(match_rule(&rules, &target("post", "https://API.example.com./v1/x")).is_ok());
        let denied = |m: &str, u: &str| match_rule(&rules, &target(m, u)).unwrap_err();
        assert!(denied("GET", "https://evil.com/v1/x").contains("not in any egress rule"));
        assert!(
            denied("GET", "http://api.example.com/v1/x").contains("no egress rule allows http")
        );
        assert!(denied("GET", "https://api.example.com:8443/v1/x").contains(":8443"));
        assert!(denied("GET", "https://api.example.com/v2/x").contains("path"));
        assert!(denied("DELETE", "https://api.example.com/v1/x").contains("method DELETE"));
        // Matched in normal form: an escaped or doubled way into /v1/ is still /v1/.
        assert!(match_rule(&rules, &target("GET", "https://api.example.com/%76%31/x")).is_ok());
        assert!(match_rule(&rules, &target("GET", "https://api.example.com//v1/x")).is_ok());
    }

    #[test]
    fn paths_are_normalised_or_refused() {
        for (raw, normal) in [
            ("", "/"),
            ("/", "/"),
            ("/v1/%61dmin", "/v1/admin"),
            ("/%7Euser/a%2Db%5f", "/~user/a-b_"),
            ("/a%2eb", "/a.b"),
            ("/a/%c3%a9", "/a/%C3%A9"),
            ("/a/%3f%23%25", "/a/%3F%23%25"),
            ("//x", "/x"),
            ("/a//b///c/", "/a/b/c/"),
            ("/a/b/", "/a/b/"),
            ("/x:y@z!$&'()*+,=", "/x:y@z!$&'()*+,="),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Ok(normal), "{raw}");
        }
        for (raw, why) in [
            ("x", "start with"),
            ("/a/../b", "`..` segment"),
            ("/a/./b", "`..` segment"),
            ("/a/..", "`..` segment"),
            ("/a/%2e%2e/b", "`..` segment"),
            ("/a/.%2E/b", "`..` segment"),
            ("/a%2fb", "encoded `/`"),
            ("/a%5Cb", "encoded `/`"),
            ("/a%3bb", "encoded `/`"),
            ("/a\\b", "`\\`"),
            ("/v1/admin;x=1", "`;` parameters"),
            ("/..;/admin", "`;` parameters"),
            ("/a%252e%252e", "encoded twice"),
            ("/a%2561", "encoded twice"),
            ("/a%", "two hex digits"),
            ("/a%4", "two hex digits"),
            ("/a%zz", "two hex digits"),
            ("/a%00", "control character"),
            ("/a b", "percent-encoded"),
            ("/a\"b", "percent-encoded"),
            ("/é", "percent-encoded"),
        ] {
            let error = normalize_path(raw).unwrap_err();
            assert!(error.contains(why), "{raw}: {error}");
        }
        // A literal `%` may be sent escaped, as long as it does not form another escape.
        assert_eq!(normalize_path("/100%25").as_deref(), Ok("/100%25"));
    }

    #[test]
    fn requests_have_one_normal_form() {
        let t = target("get", "http://127.0.0.1.:8080//v1/%61dmin?q=%61");
        assert_eq!(t.method, "GET");
        assert_eq!(t.host, "127.0.0.1");
        assert_eq!(t.path, "/v1/admin");
        assert_eq!(t.path_and_query(), "/v1/admin?q=%61");
        assert_eq!(t.authority(), "127.0.0.1:8080");
        assert_eq!(
            target("GET", "https://EXAMPLE.com./").authority(),
            "example.com"
        );
        assert_eq!(target("GET", "http://[0:0::1]:80/").authority(), "[::1]");
        assert_eq!(target("GET", "http://h.example?x").path_and_query(), "/?x");
        let refused = |m: &str, u: &str| Target::from_uri(m, &u.parse().unwrap()).unwrap_err();
        assert!(refused("BREW", "http://h.example/").contains("method `BREW`"));
        assert!(refused(&"G".repeat(5000), "http://h.example/").len() < 200);
        assert!(refused("GET", "http://2130706433/").contains("not a valid name"));
        assert!(refused("GET", "http://0x7f.1/").contains("not a valid name"));
        assert!(refused("GET", "http://h.example:99999/").contains("bad port"));
        let long = format!("http://h.example/{}", "a".repeat(MAX_URL_BYTES));
        assert!(refused("GET", &long).contains("more than the limit"));
        assert!(refused("GET", "http://h.example/a/../b").contains("`..` segment"));
    }

    #[test]
    fn suffix_hosts_and_exact_paths() {
        let rules = [rule("https://*.example.com/status", &["GET"])];
        assert!(match_rule(&rules, &target("GET", "https://a.b.example.com/status")).is_ok());
        assert!(match_rule(&rules, &target("GET", "https://example.com/status")).is_err());
        assert!(match_rule(&rules, &target("GET", "https://badexample.com/status")).is_err());
        assert!(match_rule(&rules, &target("GET", "https://a.example.com/status/x")).is_err());
    }

    #[test]
    fn bad_rules_are_refused() {
        for url in [
            "ftp://x.com/",
            "https://",
            "https://a b/",
            "https://x.com:99999/",
            "https://u@x.com/",
            "https://x.com/a?b",
            "https://x.com/../a",
            "https://x.com/a;b",
            "https://x.com/a%2fb",
        ] {
            assert!(
                EgressRule::new(url, &["GET".into()], false, None).is_err(),
                "{url}"
            );
        }
        assert!(EgressRule::new("https://x.com/", &["BREW".into()], false, None).is_err());
    }

    #[test]
    fn addresses() {
        let ok = |ip: &str, private| check_address(ip.parse().unwrap(), private).is_ok();
        assert!(ok("93.184.216.34", false));
        assert!(ok("2606:2800:220:1::1", false));
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.1.1",
            "172.16.0.1",
            "169.254.1.1",
            "::1",
            "fd12::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "100.64.0.1",
        ] {
            assert!(!ok(internal, false), "{internal} allowed");
            assert!(ok(internal, true), "{internal} refused with allow_private");
        }
        for never in [
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "64:ff9b::7f00:1",
            "::127.0.0.1",
        ] {
            assert!(!ok(never, true), "{never} allowed");
        }
    }

    #[test]
    fn cloud_metadata_is_never_reachable() {
        for metadata in [
            "169.254.169.254",
            "fd00:ec2::254",
            "168.63.129.16",
            "169.254.170.2",
            "169.254.170.23",
            "fd00:ec2::23",
            "100.100.100.200",
            "192.0.0.192",
            "fd20:ce::254",
            "fd00:c1::a9fe:a9fe",
            "::ffff:169.254.169.254",
            "::ffff:168.63.129.16",
        ] {
            let refused = check_address(metadata.parse().unwrap(), true).unwrap_err();
            assert!(refused.contains("cloud metadata"), "{metadata}: {refused}");
        }
        assert!(check_address("169.254.170.3".parse().unwrap(), true).is_ok());
    }

    #[test]
    fn globs() {
        assert!(glob_match("/v1/*", "/v1/a/b"));
        assert!(glob_match("/*/x", "/a/b/x"));
        assert!(!glob_match("/*/x", "/a/b/y"));
        assert!(glob_match("/a*b*c", "/aXbYc"));
        assert!(!glob_match("/a", "/ab"));
        assert!(glob_match("/a", "/a"));
        assert!(!glob_match("/a*a", "/a"));
        assert!(glob_match("/v1/*", "/v1/"));
    }
}
