//! What Sluice proves to a backend that it is the client's user: the clear
//! password from the config, or, for a user configured by `password_hash`,
//! the SHA1(password) token recovered from that client's own
//! mysql_native_password login (ProxySQL does the same). The token is enough
//! for mysql_native_password and nothing else, so a backend asking for
//! another plugin gets a clear error instead of a wrong answer.

use crate::BackendError;
use mysql_common::packets::AuthPlugin;
use sha1::{Digest, Sha1};

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The clear password: every plugin works.
    Password(String),
    /// SHA1(password): mysql_native_password only.
    NativeToken([u8; 20]),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(<redacted>)"),
            Credential::NativeToken(_) => f.write_str("NativeToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// The auth response for `plugin` with the server's `nonce`.
    pub fn auth_data(&self, plugin: &AuthPlugin<'_>, nonce: &[u8]) -> Result<Option<Vec<u8>>, BackendError> {
        match self {
            Credential::Password(p) => Ok(plugin.gen_data(Some(p), nonce).map(|d| d.to_vec())),
            Credential::NativeToken(token) => match plugin {
                AuthPlugin::MysqlNativePassword => Ok(Some(native_from_token(token, nonce).to_vec())),
                other => Err(BackendError::protocol(format!(
                    "the backend asks for the {} plugin, which needs the clear password; this user has only a \
                     password_hash in Sluice's config: use mysql_native_password for the account on the backends, \
                     or give Sluice its password",
                    String::from_utf8_lossy(other.as_bytes())
                ))),
            },
        }
    }

    /// The clear password, if Sluice has it (caching_sha2's full
    /// authentication sends it).
    pub fn clear(&self) -> Option<&str> {
        match self {
            Credential::Password(p) => Some(p),
            Credential::NativeToken(_) => None,
        }
    }

    /// True when this credential belongs to `user` as configured now (a
    /// reload that changes the password retires pools opened with the old).
    pub fn matches(&self, user: &sluice_config::UserConfig) -> bool {
        match (self, user.native_hash()) {
            (Credential::NativeToken(token), Some(hash)) => sha1(&[token]) == hash,
            (Credential::Password(p), None) => p == user.secret(),
            _ => false,
        }
    }
}

/// mysql_native_password's response from SHA1(password):
/// SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))).
pub fn native_from_token(token: &[u8; 20], nonce: &[u8]) -> [u8; 20] {
    let double = sha1(&[token]);
    let mask = sha1(&[&nonce[..nonce.len().min(20)], &double]);
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = token[i] ^ mask[i];
    }
    out
}

/// SHA1 of the concatenated parts.
pub fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_scrambles_as_the_password_does() {
        let nonce = *b"abcdefghijklmnopqrst";
        let token = sha1(&[b"secret"]);
        let expected = mysql_common::scramble::scramble_native(&nonce, b"secret").unwrap();
        assert_eq!(native_from_token(&token, &nonce), expected);
        let data = Credential::NativeToken(token)
            .auth_data(&AuthPlugin::MysqlNativePassword, &nonce)
            .unwrap();
        assert_eq!(data.as_deref(), Some(&expected[..]));
    }

    #[test]
    fn token_refuses_other_plugins() {
        let token = Credential::NativeToken([1; 20]);
        let err = token
            .auth_data(&AuthPlugin::CachingSha2Password, b"abcdefghijklmnopqrst")
            .unwrap_err();
        assert!(err.to_string().contains("caching_sha2_password"), "{err}");
        assert!(err.to_string().contains("password_hash"), "{err}");
    }
}
