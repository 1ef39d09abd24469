//! Checking a client's password, as the server's plugins do:
//! mysql_native_password against the clear password or its
//! `password_hash` (recovering the SHA1(password) token the backends need),
//! and caching_sha2_password without an auth switch: fast authentication
//! from the password or Sluice's cache, full authentication with the clear
//! password inside TLS or RSA-encrypted without it. Any other plugin is
//! switched to mysql_native_password.

use crate::errors;
use crate::tls::ClientStream;
use mysql_common::packets::AuthSwitchRequest;
use mysql_common::proto::MySerialize;
use mysql_common::scramble::{scramble_native, scramble_sha256};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use sluice_config::{Config, UserConfig};
use sluice_pool::{Credential, sha1};
use sluice_protocol::PacketStream;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

pub const NATIVE: &[u8] = b"mysql_native_password";
pub const CACHING_SHA2: &[u8] = b"caching_sha2_password";

/// caching_sha2_password's AuthMoreData codes.
const FAST_AUTH_OK: u8 = 0x03;
const FULL_AUTH: u8 = 0x04;
const REQUEST_PUBLIC_KEY: u8 = 0x02;

/// What authentication keeps between logins.
#[derive(Default)]
pub struct AuthState {
    /// caching_sha2_password's cache: users known by `password_hash` who
    /// passed full authentication (their next login is a fast one).
    cache: Mutex<HashMap<String, Cached>>,
    /// The configured RSA pair; unset: one generated on first use.
    configured: arc_swap::ArcSwapOption<RsaKeys>,
    generated: OnceLock<Option<Arc<RsaKeys>>>,
}

#[derive(Clone)]
struct Cached {
    native_hash: [u8; 20],
    sha2_digest: [u8; 32],
    token: [u8; 20],
}

pub struct RsaKeys {
    private: RsaPrivateKey,
    public_pem: String,
}

impl RsaKeys {
    fn from_private(private: RsaPrivateKey) -> Result<Self, String> {
        let public_pem = RsaPublicKey::from(&private)
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| format!("cannot encode the RSA public key: {e}"))?;
        Ok(RsaKeys { private, public_pem })
    }
}

impl AuthState {
    /// Loads the RSA pair `[server]` names (at start and on every reload).
    pub fn configure(&self, config: &Config) -> Result<(), String> {
        let Some(path) = &config.server.caching_sha2_private_key_file else {
            self.configured.store(None);
            return Ok(());
        };
        let key = "server.caching_sha2_private_key_file";
        let pem = std::fs::read_to_string(path).map_err(|e| format!("{key}: cannot read `{path}`: {e}"))?;
        let private = RsaPrivateKey::from_pkcs8_pem(&pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(&pem))
            .map_err(|e| format!("{key}: `{path}` is not a PEM RSA private key: {e}"))?;
        let keys = RsaKeys::from_private(private)?;
        if let Some(public_path) = &config.server.caching_sha2_public_key_file {
            let public = std::fs::read_to_string(public_path).map_err(|e| {
                format!("server.caching_sha2_public_key_file: cannot read `{public_path}`: {e}")
            })?;
            let given: RsaPublicKey = rsa::pkcs8::DecodePublicKey::from_public_key_pem(public.trim())
                .or_else(|_| rsa::pkcs1::DecodeRsaPublicKey::from_pkcs1_pem(public.trim()))
                .map_err(|e| {
                    format!("server.caching_sha2_public_key_file: `{public_path}` is not a PEM RSA public key: {e}")
                })?;
            if given != RsaPublicKey::from(&keys.private) {
                return Err(format!(
                    "server.caching_sha2_public_key_file: `{public_path}` is not the public half of `{path}`"
                ));
            }
        }
        self.configured.store(Some(Arc::new(keys)));
        Ok(())
    }

    fn keys(&self) -> Option<Arc<RsaKeys>> {
        if let Some(keys) = self.configured.load_full() {
            return Some(keys);
        }
        self.generated
            .get_or_init(|| {
                // As the server's caching_sha2_password_auto_generate_rsa_keys.
                let mut rng = rsa::rand_core::OsRng;
                match RsaPrivateKey::new(&mut rng, 2048)
                    .map_err(|e| e.to_string())
                    .and_then(RsaKeys::from_private)
                {
                    Ok(keys) => {
                        tracing::info!("generated an RSA key pair for caching_sha2_password");
                        Some(Arc::new(keys))
                    }
                    Err(e) => {
                        tracing::error!("cannot generate an RSA key pair for caching_sha2_password: {e}");
                        None
                    }
                }
            })
            .clone()
    }

    fn cached(&self, user: &str, native_hash: &[u8; 20]) -> Option<Cached> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get(user).filter(|c| &c.native_hash == native_hash).cloned()
    }

    fn remember(&self, user: &str, entry: Cached) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.insert(user.to_string(), entry);
    }
}

/// The outcome of a login.
pub enum Verdict {
    /// The password is right; the credential opens the user's backend
    /// connections.
    Accepted(Credential),
    Denied,
}

/// One login's exchange: the client, the next sequence id, and whether the
/// connection is encrypted.
pub struct Exchange<'a> {
    pub client: &'a mut PacketStream<ClientStream>,
    pub seq: u8,
    pub tls: bool,
}

impl Exchange<'_> {
    /// Sends one packet and reads the client's answer.
    /// An answer out of sequence (a client that gave up the exchange and
    /// sent a command instead) ends the connection, as on the server: it
    /// is not taken for the answer.
    async fn round(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        self.client.send(self.seq, payload).await?;
        let answer = self.client.read_packet().await?;
        let expected = self.seq.wrapping_add(1);
        if answer.seq != expected {
            tracing::info!(
                expected,
                got = answer.seq,
                "closing client: authentication answer out of sequence"
            );
            metrics::counter!("sluice_errors_total", "cause" => "out_of_order").increment(1);
            let _ = self
                .client
                .send(expected, &crate::errors::packets_out_of_order())
                .await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "authentication answer out of sequence",
            ));
        }
        self.seq = answer.seq.wrapping_add(1);
        Ok(answer.payload.to_vec())
    }
}

/// What the config knows of a user's password.
enum Known<'a> {
    Clear(&'a str),
    Hash([u8; 20]),
}

fn known(user: &UserConfig) -> Known<'_> {
    match user.native_hash() {
        Some(hash) => Known::Hash(hash),
        None => Known::Clear(user.secret()),
    }
}

/// Verifies `user`'s `response` made with `plugin` (None: the client named
/// none, which means mysql_native_password) over the handshake's `nonce`.
pub async fn verify(
    ex: &mut Exchange<'_>,
    state: &AuthState,
    user: Option<&UserConfig>,
    plugin: Option<&[u8]>,
    nonce: &[u8; 20],
    response: Vec<u8>,
) -> io::Result<Verdict> {
    match plugin {
        None | Some(NATIVE) => Ok(native(user, nonce, &response)),
        Some(CACHING_SHA2) => caching_sha2(ex, state, user, nonce, &response).await,
        Some(_) => {
            // Other plugins (ed25519, dialog, ...) are switched to native
            // with a fresh nonce, as the server switches plugins.
            let nonce = crate::handshake::nonce();
            let mut data = nonce.to_vec();
            data.push(0);
            let mut buf = Vec::new();
            AuthSwitchRequest::new(NATIVE, data).serialize(&mut buf);
            let answer = ex.round(&buf).await?;
            Ok(native(user, &nonce, &answer))
        }
    }
}

/// mysql_native_password: recompute the scramble from the clear password,
/// or, from the hash, recover SHA1(password) and check that it hashes to it.
fn native(user: Option<&UserConfig>, nonce: &[u8; 20], response: &[u8]) -> Verdict {
    let Some(user) = user else {
        return Verdict::Denied;
    };
    match known(user) {
        Known::Clear(password) => {
            let ok = match scramble_native(nonce, password.as_bytes()) {
                Some(expected) => constant_time_eq(&expected, response),
                // An empty password scrambles to an empty response.
                None => response.is_empty(),
            };
            if ok {
                Verdict::Accepted(Credential::Password(password.to_string()))
            } else {
                Verdict::Denied
            }
        }
        Known::Hash(hash) => match token_from_native(&hash, nonce, response) {
            Some(token) => Verdict::Accepted(Credential::NativeToken(token)),
            None => Verdict::Denied,
        },
    }
}

/// SHA1(password) from a native response, if the response was made with
/// the password whose double SHA1 is `hash`.
pub fn token_from_native(hash: &[u8; 20], nonce: &[u8; 20], response: &[u8]) -> Option<[u8; 20]> {
    if response.len() != 20 {
        return None;
    }
    let mask = sha1(&[nonce, hash]);
    let mut token = [0u8; 20];
    for i in 0..20 {
        token[i] = response[i] ^ mask[i];
    }
    constant_time_eq(&sha1(&[&token]), hash).then_some(token)
}

/// caching_sha2_password, answered where the client asked for it.
async fn caching_sha2(
    ex: &mut Exchange<'_>,
    state: &AuthState,
    user: Option<&UserConfig>,
    nonce: &[u8; 20],
    response: &[u8],
) -> io::Result<Verdict> {
    let Some(user) = user else {
        return Ok(Verdict::Denied);
    };
    let (switched, fresh);
    let (nonce, response) = if response.is_empty() && !matches!(known(user), Known::Clear("")) {
        // A client whose data was made for another plugin (the handshake
        // named mysql_native_password) sends none: switch it to
        // caching_sha2_password with a fresh nonce, as the server does.
        fresh = crate::handshake::nonce();
        let mut data = fresh.to_vec();
        data.push(0);
        let mut buf = Vec::new();
        AuthSwitchRequest::new(CACHING_SHA2, data).serialize(&mut buf);
        switched = ex.round(&buf).await?;
        (&fresh, &switched[..])
    } else {
        (nonce, response)
    };
    let hash = match known(user) {
        Known::Clear(password) => {
            // Sluice always "has the cache" for a password it knows.
            let ok = match scramble_sha256(nonce, password.as_bytes()) {
                Some(expected) => constant_time_eq(&expected, response),
                None => response.is_empty(),
            };
            if !ok {
                return Ok(Verdict::Denied);
            }
            if !response.is_empty() {
                ex.client.queue_packet(ex.seq, &[0x01, FAST_AUTH_OK]);
                ex.seq = ex.seq.wrapping_add(1);
            }
            return Ok(Verdict::Accepted(Credential::Password(password.to_string())));
        }
        Known::Hash(hash) => hash,
    };
    if let Some(cached) = state.cached(&user.name, &hash)
        && fast_auth_matches(&cached.sha2_digest, nonce, response)
    {
        ex.client.queue_packet(ex.seq, &[0x01, FAST_AUTH_OK]);
        ex.seq = ex.seq.wrapping_add(1);
        return Ok(Verdict::Accepted(Credential::NativeToken(cached.token)));
    }
    if response.is_empty() {
        return Ok(Verdict::Denied);
    }
    // Full authentication: the clear password, inside TLS or RSA-encrypted.
    let answer = ex.round(&[0x01, FULL_AUTH]).await?;
    let password = if ex.tls {
        answer
    } else {
        let Some(keys) = state.keys() else {
            return Ok(Verdict::Denied);
        };
        let encrypted = if answer == [REQUEST_PUBLIC_KEY] {
            let mut more = vec![0x01];
            more.extend_from_slice(keys.public_pem.as_bytes());
            ex.round(&more).await?
        } else {
            answer
        };
        match keys.private.decrypt(Oaep::new::<::sha1::Sha1>(), &encrypted) {
            Ok(mut plain) => {
                for (i, b) in plain.iter_mut().enumerate() {
                    *b ^= nonce[i % nonce.len()];
                }
                plain
            }
            Err(_) => return Ok(Verdict::Denied),
        }
    };
    let password = password.strip_suffix(&[0]).unwrap_or(&password);
    let token = sha1(&[password]);
    if !constant_time_eq(&sha1(&[&token]), &hash) {
        return Ok(Verdict::Denied);
    }
    let stage1: [u8; 32] = Sha256::digest(password).into();
    state.remember(
        &user.name,
        Cached {
            native_hash: hash,
            sha2_digest: Sha256::digest(stage1).into(),
            token,
        },
    );
    Ok(Verdict::Accepted(Credential::NativeToken(token)))
}

/// The server's fast authentication: from SHA256(SHA256(password)),
/// unmask the client's SHA256(password) and hash it again.
fn fast_auth_matches(digest: &[u8; 32], nonce: &[u8; 20], response: &[u8]) -> bool {
    if response.len() != 32 {
        return false;
    }
    let mask: [u8; 32] = Sha256::new()
        .chain_update(digest)
        .chain_update(nonce)
        .finalize()
        .into();
    let mut stage1 = [0u8; 32];
    for i in 0..32 {
        stage1[i] = response[i] ^ mask[i];
    }
    constant_time_eq(&Sha256::digest(stage1), digest)
}

/// A refused login's ERR packet, counted by cause.
pub fn refusal(cause: &'static str, user: &str, peer_host: &str, used_password: bool) -> Vec<u8> {
    metrics::counter!("sluice_client_connections_rejected_total", "cause" => cause).increment(1);
    metrics::counter!("sluice_errors_total", "cause" => cause).increment(1);
    errors::access_denied(user, peer_host, used_password)
}

/// subtle's comparison, which the optimizer cannot turn into an early exit.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// `sluice hash-password`: the mysql_native_password hash of `password`,
/// as `SELECT PASSWORD('...')` prints it.
pub fn native_hash_text(password: &str) -> String {
    let double = sha1(&[&sha1(&[password.as_bytes()])]);
    let mut out = String::from("*");
    for b in double {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_text_is_what_the_server_prints() {
        // SELECT PASSWORD('root') on MariaDB.
        assert_eq!(
            native_hash_text("root"),
            "*81F5E21E35407D884A6CD4A731AEBFB6AF209E1B"
        );
    }

    #[test]
    fn native_response_yields_the_token() {
        let nonce = *b"abcdefghijklmnopqrst";
        let hash = sluice_config::parse_native_hash(&native_hash_text("s3cret")).unwrap();
        let response = scramble_native(&nonce, b"s3cret").unwrap();
        assert_eq!(
            token_from_native(&hash, &nonce, &response),
            Some(sha1(&[b"s3cret"]))
        );
        let wrong = scramble_native(&nonce, b"guess").unwrap();
        assert_eq!(token_from_native(&hash, &nonce, &wrong), None);
        assert_eq!(token_from_native(&hash, &nonce, &[]), None);
    }

    #[test]
    fn fast_auth_checks_against_the_double_sha256() {
        let nonce = *b"abcdefghijklmnopqrst";
        let stage1: [u8; 32] = Sha256::digest(b"pw").into();
        let digest: [u8; 32] = Sha256::digest(stage1).into();
        let response = scramble_sha256(&nonce, b"pw").unwrap();
        assert!(fast_auth_matches(&digest, &nonce, &response));
        let wrong = scramble_sha256(&nonce, b"pW").unwrap();
        assert!(!fast_auth_matches(&digest, &nonce, &wrong));
    }
}
