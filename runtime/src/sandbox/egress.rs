//! Egress rules: which HTTP requests may leave a tool's sandbox. Pure matching, no wasmtime.
//!
//! A request leaves only if one rule matches its scheme, host, port, path and method. This is
//! decided before any DNS query; afterwards the address the name resolves to is checked too
//! (`check_address`), so a listed name cannot point the host at an internal service.

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
            Some(i) => (&rest[..i], &rest[i..]),
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
        if path_has_traversal(path) {
            return Err(format!(
                "url `{url}`: path must not contain `..` or encoded separators"
            ));
        }
        let methods = methods
            .iter()
            .map(|m| {
                let m = m.to_ascii_uppercase();
                if METHODS.contains(&m.as_str()) {
                    Ok(m)
                } else {
                    Err(format!("method `{m}` is not one of {}", METHODS.join(", ")))
                }
            })
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
            path: path.to_string(),
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

/// The parts of an outgoing request that rules look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub method: String,
    pub scheme: String,
    /// Lowercase, without a trailing dot; IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// Path without the query.
    pub path: String,
}

impl Target {
    pub fn from_uri(method: &str, uri: &http::Uri) -> Result<Target, String> {
        let scheme = uri
            .scheme_str()
            .ok_or("request has no scheme")?
            .to_ascii_lowercase();
        let authority = uri.authority().ok_or("request has no host")?;
        if authority.as_str().contains('@') {
            return Err("user info in a request URL is not allowed".into());
        }
        let port = authority
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        Ok(Target {
            method: method.to_ascii_uppercase(),
            host: normalize_host(authority.host()),
            scheme,
            port,
            path: uri.path().to_string(),
        })
    }

    pub fn origin(&self) -> Origin {
        Origin {
            scheme: self.scheme.clone(),
            host: self.host.clone(),
            port: self.port,
        }
    }

    /// `scheme://host:port/path`, as shown in records (no query: it may carry data).
    pub fn display(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{}://{host}:{}{}", self.scheme, self.port, self.path)
    }
}

/// Finds the rule that allows `target`, or says which check failed.
pub fn match_rule<'a>(rules: &'a [EgressRule], target: &Target) -> Result<&'a EgressRule, String> {
    if path_has_traversal(&target.path) {
        return Err(format!(
            "path `{}` contains `..` or encoded separators",
            target.path
        ));
    }
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

/// Whether the host may connect to `ip` for a request allowed by `rule`.
pub fn check_address(ip: IpAddr, allow_private: bool) -> Result<(), String> {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
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
    /// Cloud instance metadata: never reachable from a tool.
    Metadata,
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
            AddressClass::Metadata => "cloud metadata",
            AddressClass::Unroutable => "non-routable",
        }
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, ..] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        AddressClass::Metadata
    } else if ip.is_loopback() {
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
    let first = ip.segments()[0];
    if ip == "fd00:ec2::254".parse::<Ipv6Addr>().unwrap() {
        AddressClass::Metadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unique_local() {
        AddressClass::Private
    } else if ip.is_unicast_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_unspecified() || ip.is_multicast() || first == 0x0064 || first == 0x2002 {
        // Also NAT64 (64:ff9b::/96) and 6to4, which can embed any IPv4 address.
        AddressClass::Unroutable
    } else {
        AddressClass::Public
    }
}

fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && (host.parse::<IpAddr>().is_ok()
            || host.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            }))
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

/// Servers normalise `..` and decode `%2f`; a prefix rule must not be escaped that way.
fn path_has_traversal(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.split('/').any(|seg| seg == ".." || seg == ".")
        || lower.contains("%2e")
        || lower.contains("%2f")
        || lower.contains("%5c")
        || path.contains('\\')
}

/// `*` matches any run of characters (including `/`); everything else matches itself.
fn glob_match(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(i) => rest = &rest[i + middle.len()..],
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
        assert!(denied("GET", "https://api.example.com/v1/../admin").contains(".."));
        assert!(denied("GET", "https://api.example.com/v1/%2e%2e/admin").contains(".."));
        assert!(denied("DELETE", "https://api.example.com/v1/x").contains("method DELETE"));
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
            "169.254.169.254",
            "0.0.0.0",
            "::",
            "255.255.255.255",
            "224.0.0.1",
            "fd00:ec2::254",
            "64:ff9b::7f00:1",
        ] {
            assert!(!ok(never, true), "{never} allowed");
        }
    }

    #[test]
    fn globs() {
        assert!(glob_match("/v1/*", "/v1/a/b"));
        assert!(glob_match("/*/x", "/a/b/x"));
        assert!(!glob_match("/*/x", "/a/b/y"));
        assert!(glob_match("/a*b*c", "/aXbYc"));
        assert!(!glob_match("/a", "/ab"));
    }
}
