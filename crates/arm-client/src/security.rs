//! Where credentials may go.
//!
//! Two rules, both checked before any byte is sent:
//! - a bearer token, a client secret or an account key travels only over HTTPS, except to a
//!   loopback host (the emulator, Azurite), as the Azure SDKs do;
//! - a URL handed to us by a server (a `Location`, an `Azure-AsyncOperation`, a `nextLink`)
//!   is followed only if its scheme, host and port are the ARM endpoint's: the token is never
//!   sent elsewhere.
//!
//! A third rule shapes every HTTP client that carries credentials ([`harden`]): redirects
//! are never followed, and plain-HTTP destinations (loopback, the link-local IMDS) bypass any
//! proxy from the environment, which would otherwise see the token in clear text.
//!
//! This module only decides and configures; it performs no I/O.

use url::Url;

use crate::error::{Error, Result, display_url};

/// Whether `url`'s host is a loopback address (`127.0.0.0/8`, `::1`) or `localhost`.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// Checks that credentials may be sent to `url`: HTTPS, or HTTP to a loopback host.
pub fn check_credential_url(url: &Url) -> Result<()> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(Error::InsecureUrl {
            url: display_url(url),
            reason: "plain HTTP is allowed only to loopback hosts (127.0.0.1, ::1, localhost)"
                .into(),
        }),
        other => Err(Error::InsecureUrl {
            url: display_url(url),
            reason: format!("unsupported scheme `{other}`"),
        }),
    }
}

/// Configures a client builder for requests carrying credentials to `url`: no redirects (a
/// `307` would resend the request, body and all, wherever the server says; `reqwest` would
/// follow up to ten by default), and no proxy when `url` is plain HTTP (only loopback hosts
/// and the IMDS address are allowed that; `HTTP_PROXY` from the environment would otherwise
/// receive the bearer token, or the IMDS's answer, unencrypted).
pub(crate) fn harden(builder: reqwest::ClientBuilder, url: &Url) -> reqwest::ClientBuilder {
    let builder = builder.redirect(reqwest::redirect::Policy::none());
    if url.scheme() == "http" {
        builder.no_proxy()
    } else {
        builder
    }
}

/// The `host[:port]` a URL points at, for pinning and messages.
pub fn authority(url: &Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{}:{p}", h.to_ascii_lowercase()),
        (Some(h), None) => h.to_ascii_lowercase(),
        (None, _) => String::new(),
    }
}

/// Checks that a server-provided URL stays on the pinned endpoint (same scheme, host and
/// port) and parses it. `text` may be relative to `pinned`; ARM sends absolute URLs.
pub fn pin_url(pinned: &Url, text: &str) -> Result<Url> {
    let url = pinned.join(text.trim()).map_err(|e| Error::Decode {
        operation: "follow a server-provided URL".into(),
        message: format!(
            "`{}` is not a URL: {e}",
            text.chars().take(200).collect::<String>()
        ),
    })?;
    if url.scheme() != pinned.scheme() || authority(&url) != authority(pinned) {
        return Err(Error::ForeignHost {
            url: display_url(&url),
            expected: authority(pinned),
        });
    }
    check_credential_url(&url)?;
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn bearer_tokens_only_over_https_or_loopback() {
        for ok in [
            "https://management.azure.com/",
            "http://127.0.0.1:8080/",
            "http://127.5.0.1/",
            "http://[::1]:99/",
            "http://localhost:1/",
        ] {
            assert!(check_credential_url(&u(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "http://management.azure.com/",
            "http://10.0.0.1/",
            "ftp://127.0.0.1/",
        ] {
            let err = check_credential_url(&u(bad)).unwrap_err();
            assert!(matches!(err, Error::InsecureUrl { .. }), "{bad}: {err}");
            assert!(!err.may_have_been_sent());
        }
    }

    #[test]
    fn polling_urls_are_pinned_to_the_arm_host() {
        let arm = u("https://management.azure.com/");
        let ok = pin_url(
            &arm,
            "https://management.azure.com/subscriptions/x/operationresults/1?api-version=1",
        )
        .unwrap();
        assert_eq!(ok.path(), "/subscriptions/x/operationresults/1");
        assert!(pin_url(&arm, "https://MANAGEMENT.azure.com:443/a").is_ok());
        for bad in [
            "https://evil.example.com/subscriptions/x",
            "https://management.azure.com.evil.example.com/x",
            "https://management.azure.com:8443/x",
            "http://management.azure.com/x",
            "//evil.example.com/x",
        ] {
            let err = pin_url(&arm, bad).unwrap_err();
            assert!(matches!(err, Error::ForeignHost { .. }), "{bad}: {err}");
        }
        let local = u("http://127.0.0.1:4000/");
        assert!(pin_url(&local, "http://127.0.0.1:4000/op/1").is_ok());
        assert!(pin_url(&local, "http://127.0.0.1:4001/op/1").is_err());
        assert!(pin_url(&local, "/op/relative").is_ok());
    }

    #[test]
    fn refused_urls_drop_their_query() {
        let err = pin_url(
            &u("https://management.azure.com/"),
            "https://evil.example.com/x?sig=abc",
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("sig=abc"), "{err}");
    }

    // See: #4. With a proxy configured (as `HTTP_PROXY` would), a plain-HTTP loopback request
    // carrying a bearer token goes straight to its host, never through the proxy; HTTPS keeps
    // the proxy (it only sees an encrypted CONNECT tunnel).
    #[tokio::test]
    async fn plain_http_credentials_bypass_proxies() {
        use std::sync::Arc;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        async fn recorder() -> (String, Arc<parking_lot::Mutex<Vec<String>>>) {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", l.local_addr().unwrap());
            let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let s = seen.clone();
            tokio::spawn(async move {
                while let Ok((mut sock, _)) = l.accept().await {
                    let mut buf = [0u8; 4096];
                    let n = sock.read(&mut buf).await.unwrap_or(0);
                    s.lock()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let _ = sock
                        .write_all(
                            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        )
                        .await;
                }
            });
            (base, seen)
        }
        let (proxy, via_proxy) = recorder().await;
        let (target, direct) = recorder().await;
        let proxied =
            || reqwest::Client::builder().proxy(reqwest::Proxy::all(proxy.as_str()).unwrap());

        let client = harden(proxied(), &u(&target)).build().unwrap();
        client
            .get(format!("{target}/x"))
            .bearer_auth("tok-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(direct.lock().len(), 1);
        assert!(via_proxy.lock().is_empty(), "{:?}", via_proxy.lock());

        // HTTPS keeps the proxy: it receives a CONNECT, never the token.
        let https = u("https://management.azure.com/");
        let client = harden(proxied(), &https).build().unwrap();
        let _ = client
            .get(https.clone())
            .bearer_auth("tok-secret")
            .send()
            .await;
        let seen = via_proxy.lock().clone();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            seen[0].starts_with("CONNECT management.azure.com:443"),
            "{seen:?}"
        );
        assert!(!seen[0].contains("tok-secret"));
    }
}
