//! The admin endpoint's optional bearer token (`server.admin_token`), and
//! the warning for an endpoint reachable from the network without one.

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use sha2::{Digest, Sha256};
use sluice_config::Config;
use subtle::ConstantTimeEq;

pub const REFUSAL: &str = "unauthorized: this endpoint needs the header `Authorization: Bearer <token>` \
     with the token of server.admin_token\n";

/// The request carries `Authorization: Bearer <token>`. Compared in
/// constant time, over digests so the token's length does not show either.
pub fn bearer_matches(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, rest)| rest.trim())
    else {
        return false;
    };
    let given = Sha256::digest(given.as_bytes());
    let wanted = Sha256::digest(token.as_bytes());
    given.ct_eq(&wanted).into()
}

/// A warning when `server.admin_listen` takes connections from beyond
/// loopback and no `server.admin_token` guards it.
pub fn exposure_warning(config: &Config) -> Option<String> {
    use std::net::ToSocketAddrs;
    if config.server.admin_token.is_some() {
        return None;
    }
    let listen = &config.server.admin_listen;
    let loopback = listen
        .to_socket_addrs()
        .is_ok_and(|mut addrs| addrs.all(|a| a.ip().is_loopback()));
    (!loopback).then(|| {
        format!(
            "server.admin_listen = \"{listen}\" is not a loopback address and server.admin_token is not set: \
             anyone who reaches it can read /metrics and /status; set server.admin_token or listen on 127.0.0.1"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).expect("header value"));
        headers
    }

    #[test]
    fn bearer_token_is_checked() {
        assert!(bearer_matches(&with("Bearer s3cret"), "s3cret"));
        assert!(bearer_matches(&with("bearer s3cret"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cre"), "s3cret"));
        assert!(!bearer_matches(&with("Bearer s3cretx"), "s3cret"));
        assert!(!bearer_matches(&with("Basic s3cret"), "s3cret"));
        assert!(!bearer_matches(&with("s3cret"), "s3cret"));
        assert!(!bearer_matches(&HeaderMap::new(), "s3cret"));
    }

    fn config(admin: &str, token: &str) -> Config {
        Config::parse(&format!(
            "[server]\nlisten = \"127.0.0.1:6033\"\nadmin_listen = \"{admin}\"\n{token}\n\
             [[users]]\nname = \"app\"\npassword = \"app\"\n\
             [[backends]]\nname = \"p\"\naddress = \"127.0.0.1:3306\"\nrole = \"primary\"\n"
        ))
        .expect("valid config")
    }

    #[test]
    fn open_endpoint_without_token_is_warned_about() {
        assert!(exposure_warning(&config("0.0.0.0:9033", "")).is_some());
        assert!(exposure_warning(&config("0.0.0.0:9033", "admin_token = \"\"")).is_some());
        assert!(exposure_warning(&config("0.0.0.0:9033", "admin_token = \"t\"")).is_none());
        assert!(exposure_warning(&config("127.0.0.1:9033", "")).is_none());
        assert!(exposure_warning(&config("[::1]:9033", "")).is_none());
    }
}
