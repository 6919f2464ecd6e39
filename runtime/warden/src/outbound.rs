//! Warden's own outgoing requests, never a tool's: traces to an OTLP collector, revocation
//! events to their receivers. Each is one HTTP/1.1 POST to an endpoint an operator
//! configured, over TLS with the web's roots for https, bounded in time and in what is read
//! back. No wasmtime here.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use serde::Deserialize;
use std::fmt;
use std::time::Duration;
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;

/// What is read of a response's body at most: receivers answer with a status; the rest is
/// read only so the connection ends cleanly.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Where Warden posts: an `http` or `https` URL without credentials in it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Endpoint {
    tls: bool,
    host: String,
    port: u16,
    /// Path and query, as the request line carries them.
    target: String,
    /// The URL as the operator wrote it.
    written: String,
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
        Ok(Endpoint {
            tls,
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            target: uri
                .path_and_query()
                .map_or("/".into(), |p| p.as_str().to_string()),
            written: text.to_string(),
        })
    }

    /// The URL as it was written.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// This endpoint with `path` added to its path (an OTLP base URL and its signal's path).
    pub fn join(&self, path: &str) -> Endpoint {
        let base = self.target.split('?').next().unwrap_or_default();
        Endpoint {
            target: format!(
                "{}/{}",
                base.trim_end_matches('/'),
                path.trim_start_matches('/')
            ),
            ..self.clone()
        }
    }

    fn authority(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }
}

impl TryFrom<String> for Endpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Endpoint, String> {
        Endpoint::parse(&text)
    }
}

/// Shown without its query, which may carry a token.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        let path = self.target.split('?').next().unwrap_or_default();
        write!(f, "{scheme}://{}{path}", self.authority())
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
        let io: Box<dyn crate::sandbox::http::Stream> = if endpoint.tls {
            let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
                .map_err(|e| format!("TLS: {e}"))?;
            let tls = crate::sandbox::http::TLS
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
        let conn = tokio::spawn(conn);
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
        conn.abort();
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
        assert_eq!(e.to_string(), "https://collector.example:443/otlp/");
        assert_eq!(
            e.join("v1/traces").to_string(),
            "https://collector.example:443/otlp/v1/traces"
        );
        assert_eq!(
            Endpoint::parse("http://[::1]:9/x").unwrap().to_string(),
            "http://[::1]:9/x"
        );
        for bad in [
            "ftp://host/",
            "//host/x",
            "http://user:pw@host/",
            "host:4318",
            "",
            "http://",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
