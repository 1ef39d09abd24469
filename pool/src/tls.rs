//! TLS from Sluice to one backend, as MySQL's `--ssl-mode` names it:
//! `disabled`, `preferred` (TLS when the server offers it), `required`,
//! `verify_ca` (the certificate chains to `tls_ca_file`, any name) and
//! `verify_identity` (the chain and the host or IP of the backend's
//! address). The rustls client config is built once per backend per config
//! generation ([`BackendTls::new`]) and shared by every connection of its
//! pools; the monitor and the guard use the same settings through
//! mysql_async ([`crate::monitor::connect`]).

use crate::BackendError;
use crate::stream::BackendStream;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use sluice_config::{BackendTls as TlsSettings, BackendTlsMode as Mode};
use std::sync::Arc;
use tokio::net::TcpStream;

/// One backend's TLS settings, with the client config built from them.
#[derive(Debug)]
pub struct BackendTls {
    settings: TlsSettings,
    /// The files' contents when this was built: a reload that finds them
    /// changed builds a new config (and new pools), one that finds them
    /// unchanged keeps the pools and their connections.
    files: Vec<Option<Vec<u8>>>,
    /// None for `disabled`; Err when the files could not be used (they were
    /// validated, but may have changed since): every connection then fails
    /// with this reason instead of silently going without TLS.
    client: Option<Result<Arc<ClientConfig>, String>>,
    server_name: ServerName<'static>,
}

impl BackendTls {
    /// Builds the client config for a backend at `address`.
    pub fn new(settings: &TlsSettings, address: &str) -> Arc<BackendTls> {
        let files = read_files(settings);
        let client = (settings.mode != Mode::Disabled).then(|| build(settings.mode, &files).map(Arc::new));
        let host = sluice_config::host_of(address);
        // Non-verifying modes do not need a valid name (an IP sends no SNI).
        let server_name = ServerName::try_from(host.to_string())
            .unwrap_or(ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        Arc::new(BackendTls {
            settings: settings.clone(),
            files,
            client,
            server_name,
        })
    }

    /// The same settings, and the files still hold what they held.
    pub fn unchanged(&self, settings: &TlsSettings) -> bool {
        self.settings == *settings && read_files(settings) == self.files
    }

    /// Whether to upgrade a connection whose server does (or does not)
    /// offer TLS; an error when the mode needs TLS the server does not offer.
    pub(crate) fn wanted(&self, server_offers: bool) -> Result<bool, BackendError> {
        match (self.settings.mode, server_offers) {
            (Mode::Disabled, _) | (Mode::Preferred, false) => Ok(false),
            (mode, false) => Err(not_offered(mode)),
            (_, true) => Ok(true),
        }
    }

    /// The TLS handshake over `tcp` (after the SSLRequest packet).
    pub(crate) async fn upgrade(&self, tcp: TcpStream) -> Result<BackendStream, BackendError> {
        let config = match &self.client {
            Some(Ok(config)) => config.clone(),
            Some(Err(e)) => return Err(BackendError::Tls(format!("TLS setup failed: {e}"))),
            None => return Ok(BackendStream::Plain(tcp)),
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        match connector.connect(self.server_name.clone(), tcp).await {
            Ok(tls) => Ok(BackendStream::Tls(Box::new(tls))),
            Err(e) => Err(BackendError::Tls(format!("TLS handshake failed: {e}"))),
        }
    }
}

/// A mode that needs TLS met a server that does not offer it.
pub(crate) fn not_offered(mode: Mode) -> BackendError {
    BackendError::Tls(format!(
        "TLS is required (tls = \"{}\") but the server does not offer it (no CLIENT_SSL in its handshake; set ssl_cert and ssl_key on the server)",
        mode.as_str()
    ))
}

fn read_files(settings: &TlsSettings) -> Vec<Option<Vec<u8>>> {
    [&settings.ca_file, &settings.cert_file, &settings.key_file]
        .into_iter()
        .map(|path| path.as_ref().and_then(|p| std::fs::read(p).ok()))
        .collect()
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// webpki's verifier for the CA in `files` (CA, cert, key contents).
fn ca_verifier(
    files: &[Option<Vec<u8>>],
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, String> {
    let ca = files
        .first()
        .and_then(Option::as_ref)
        .ok_or("tls_ca_file cannot be read")?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca) {
        let cert = cert.map_err(|e| format!("tls_ca_file: {e}"))?;
        roots.add(cert).map_err(|e| format!("tls_ca_file: {e}"))?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("tls_ca_file: {e}"))
}

/// The client config for `mode` from the files' contents (CA, cert, key).
fn build(mode: Mode, files: &[Option<Vec<u8>>]) -> Result<ClientConfig, String> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = if mode.verifies() {
        let webpki = ca_verifier(files, &provider)?;
        if mode == Mode::VerifyIdentity {
            webpki
        } else {
            Arc::new(ChainOnly(webpki))
        }
    } else {
        Arc::new(AnyCertificate(provider.signature_verification_algorithms))
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match (
        files.get(1).and_then(Option::as_ref),
        files.get(2).and_then(Option::as_ref),
    ) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("tls_cert_file: {e}"))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("tls_key_file: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls_cert_file / tls_key_file: {e}"))
        }
        _ => Ok(builder.with_no_client_auth()),
    }
}

/// `preferred` / `required`: encryption without authentication of the
/// server, as MySQL clients do in these modes. The handshake signature is
/// still checked (the server must hold the key of the certificate it sent).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify_ca`: the full webpki check (chain to the CA, validity dates,
/// server-auth usage) except the name, which webpki checks last.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A name the server's certificate presents, for `verify_ca` on mysql_async
/// connections (the monitor, the guard): mysql_async cannot skip only the
/// name check with rustls 0.23 (it looks for "NotValidForName" in the
/// error's text, which rustls no longer prints), so Sluice first checks the
/// chain itself on a throwaway connection and learns a name the certificate
/// holds; mysql_async then verifies the chain and that name. None: the
/// certificate already names the address's host.
pub(crate) async fn presented_name(address: &str, tls: &BackendTls) -> Result<Option<String>, BackendError> {
    use mysql_common::constants::CapabilityFlags as Caps;
    use mysql_common::io::ParseBuf;
    use mysql_common::packets::{HandshakePacket, SslRequest};
    use mysql_common::proto::{MyDeserialize, MySerialize};

    let provider = provider();
    let webpki = ca_verifier(&tls.files, &provider)
        .map_err(|e| BackendError::Tls(format!("TLS setup failed: {e}")))?;
    let recorder = Arc::new(NameRecorder {
        inner: webpki,
        name: std::sync::Mutex::new(None),
    });
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::Tls(format!("TLS setup failed: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();

    let tcp = TcpStream::connect(address).await?;
    let mut stream = sluice_protocol::PacketStream::new(BackendStream::Plain(tcp));
    let greeting = stream.read_packet().await?;
    let handshake = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload))
        .map_err(|e| BackendError::protocol(format!("bad server handshake: {e}")))?;
    tls.wanted(handshake.capabilities().contains(Caps::CLIENT_SSL))?;
    let caps = (crate::BACKEND_CAPABILITIES & handshake.capabilities()) | Caps::CLIENT_SSL;
    let mut buf = Vec::new();
    SslRequest::new(caps, 1 << 30, 45).serialize(&mut buf);
    stream.send(greeting.seq.wrapping_add(1), &buf).await?;
    let BackendStream::Plain(tcp) = stream.into_inner()? else {
        return Err(BackendError::protocol(
            "TLS upgrade of a stream that is not plain TCP",
        ));
    };
    let mut upgraded = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(tls.server_name.clone(), tcp)
        .await
        .map_err(|e| BackendError::Tls(format!("TLS handshake failed: {e}")))?;
    tokio::io::AsyncWriteExt::shutdown(&mut upgraded).await.ok();
    let name = recorder.name.lock().unwrap_or_else(|e| e.into_inner()).take();
    Ok(name)
}

/// `verify_ca`'s check that also keeps a name the certificate presents
/// when it does not name the host.
#[derive(Debug)]
struct NameRecorder {
    inner: Arc<WebPkiServerVerifier>,
    name: std::sync::Mutex<Option<String>>,
}

/// A usable server name from webpki's description of a presented one
/// (`DnsName("db.example")`, `IpAddress(10.0.0.1)`); a wildcard's first
/// label is replaced by a concrete one it matches.
fn usable_name(presented: &str) -> Option<String> {
    let name = if let Some(dns) = presented
        .strip_prefix("DnsName(\"")
        .and_then(|s| s.strip_suffix("\")"))
    {
        match dns.strip_prefix("*.") {
            Some(rest) => format!("sluice.{rest}"),
            None => dns.to_string(),
        }
    } else {
        presented
            .strip_prefix("IpAddress(")?
            .strip_suffix(')')?
            .to_string()
    };
    ServerName::try_from(name.as_str()).is_ok().then_some(name)
}

impl ServerCertVerifier for NameRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => {
                let name = presented.iter().find_map(|p| usable_name(p));
                let Some(name) = name else {
                    return Err(rustls::Error::General(
                        "the certificate holds no DNS name or IP address to verify it with".into(),
                    ));
                };
                *self.name.lock().unwrap_or_else(|e| e.into_inner()) = Some(name);
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presented_names_become_server_names() {
        assert_eq!(
            usable_name("DnsName(\"wrong.example\")").as_deref(),
            Some("wrong.example")
        );
        assert_eq!(
            usable_name("DnsName(\"*.db.example\")").as_deref(),
            Some("sluice.db.example")
        );
        assert_eq!(usable_name("IpAddress(10.1.2.3)").as_deref(), Some("10.1.2.3"));
        assert_eq!(usable_name("UniformResourceIdentifier(\"x\")"), None);
    }

    #[test]
    fn modes_decide_the_upgrade() {
        let tls = |mode| {
            BackendTls::new(
                &TlsSettings {
                    mode,
                    ..TlsSettings::default()
                },
                "127.0.0.1:3306",
            )
        };
        assert!(!tls(Mode::Disabled).wanted(true).unwrap());
        assert!(tls(Mode::Preferred).wanted(true).unwrap());
        assert!(!tls(Mode::Preferred).wanted(false).unwrap());
        assert!(tls(Mode::Required).wanted(true).unwrap());
        let err = tls(Mode::Required).wanted(false).unwrap_err().to_string();
        assert!(
            err.contains("tls = \"required\"") && err.contains("does not offer"),
            "{err}"
        );
    }
}
