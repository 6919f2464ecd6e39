//! Warden's own outgoing requests, never a tool's: traces to an OTLP collector, revocation
//! events to their receivers. Each is one HTTP/1.1 POST to an endpoint an operator
//! configured, over TLS with the web's roots for https, bounded in time and in what is read
//! back. No wasmtime here.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};

use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;

/// What is read of a response's body at most: receivers answer with a status; the rest is
/// read only so the connection ends cleanly.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// A connection, plain or TLS.
pub(crate) trait Stream:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static
{
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// The client TLS configuration of every outgoing connection, a tool's and Warden's own:
/// the web's roots, ring's default protocol versions.
pub(crate) static TLS: LazyLock<tokio_rustls::TlsConnector> = LazyLock::new(|| {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    // Fixed configuration, no input: ring supports the default versions.
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
});

/// Where Warden posts: an `http` or `https` URL without credentials in it. Shown (and
/// debug-printed) without its query, which may carry a token.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, as the request line carries them.
    target: String,
    /// The URL as written, without its query.
    shown: String,
}

impl Endpoint {
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let uri: http::Uri = text
            .parse()
            .map_err(|_| "not a URL (expected http://host:port/path)".to_string())?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("the URL's scheme must be http or https".into()),
        };
        let authority = uri.authority().ok_or("the URL names no host")?;
        // A password in the file that names the endpoint would be a secret outside [secrets].
        if authority.as_str().contains('@') {
            return Err("the URL must not carry a user or password".into());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        // Read here, not with `port_u16`, which takes a port past 65535 for none at all.
        let port = match authority.as_str().rsplit_once(':') {
            Some((_, port)) if !port.contains(']') => port
                .parse::<u16>()
                .map_err(|_| "the URL's port is not a number from 0 to 65535".to_string())?,
            _ if tls => 443,
            _ => 80,
        };
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port,
            target: uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_string()),
            shown: without_query(text).to_string(),
        })
    }

    /// This endpoint with `path` added to its path, its query kept (an OTLP base URL and its
    /// signal's path).
    pub fn join(&self, path: &str) -> Endpoint {
        let add = |base: &str| {
            format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path.trim_start_matches('/')
            )
        };
        let (base, query) = match self.target.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.target.as_str(), String::new()),
        };
        Endpoint {
            target: format!("{}{query}", add(base)),
            shown: add(&self.shown),
            ..self.clone()
        }
    }

    /// This endpoint shown (in logs, errors, the audit) as its origin only: its path carries
    /// a token (a chat service's webhook).
    pub fn shown_as_origin(mut self) -> Endpoint {
        let scheme = if self.tls { "https" } else { "http" };
        self.shown = format!("{scheme}://{}/…", self.authority());
        self
    }

    fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

fn without_query(url: &str) -> &str {
    url.split(['?', '#']).next().unwrap_or_default()
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// Posts `body` to `endpoint` and returns the response's status; every failure (connecting,
/// TLS, the exchange, `timeout` passing) is a one-line reason naming the endpoint.
pub async fn post(
    endpoint: &Endpoint,
    content_type: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<http::StatusCode, String> {
    let exchange = async {
        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|e| format!("connecting: {e}"))?;
        let io: Box<dyn Stream> = if endpoint.tls {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("TLS: {e}"))?;
            let tls = TLS
                .connect(name, stream)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            Box::new(tls)
        } else {
            Box::new(stream)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        // Ended when this exchange ends, however it ends (its timeout included).
        let conn = AbortOnDrop(tokio::spawn(conn));
        let request = http::Request::post(endpoint.target.as_str())
            .header(http::header::HOST, endpoint.authority())
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status();
        let _ = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await;
        drop(conn);
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(status)) => Ok(status),
        Ok(Err(reason)) => Err(format!("posting to {endpoint}: {reason}")),
        Err(_) => Err(format!(
            "posting to {endpoint}: no answer within {} s",
            timeout.as_secs_f64()
        )),
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_http_urls_without_credentials() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap();
        assert_eq!(
            e.join("/v1/traces").to_string(),
            "http://127.0.0.1:4318/v1/traces"
        );
        let e = Endpoint::parse("https://collector.example/otlp/?token=x").unwrap();
        assert_eq!(e.port, 443);
        assert_eq!(e.to_string(), "https://collector.example/otlp/");
        assert!(!format!("{e:?}").contains("token"));
        let joined = e.join("v1/traces");
        assert_eq!(
            joined.to_string(),
            "https://collector.example/otlp/v1/traces"
        );
        assert_eq!(joined.target, "/otlp/v1/traces?token=x");
        let hook = Endpoint::parse("https://hooks.example/services/T0/B0/s3cret")
            .unwrap()
            .shown_as_origin();
        assert_eq!(hook.to_string(), "https://hooks.example:443/…");
        assert!(!format!("{hook:?}").contains("s3cret"));
        assert_eq!(hook.target, "/services/T0/B0/s3cret");
        let e = Endpoint::parse("http://[::1]:9/x").unwrap();
        assert_eq!((e.host.as_str(), e.authority()), ("::1", "[::1]:9".into()));
        for bad in [
            "ftp://host/",
            "//host/x",
            "http://user:pw@host/",
            "host:4318",
            "",
            "http://",
            "http://h:99999/",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
