//! A bare-bones MySQL client for the cases real drivers cannot produce:
//! malformed and oversized packets, unsupported commands, COM_FIELD_LIST and
//! COM_STATISTICS. It reuses Sluice's own framing.

use mysql_common::constants::{CapabilityFlags as Caps, MariadbCapabilities};
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use sluice_protocol::{Packet, PacketStream};
use tokio::net::TcpStream;

/// The multi-result bits every current driver sends. Clients with the same
/// bits share Sluice's pools (the bits are part of its pool key).
pub const DRIVER_CAPS: Caps =
    Caps::from_bits_truncate(Caps::CLIENT_MULTI_RESULTS.bits() | Caps::CLIENT_PS_MULTI_RESULTS.bits());

pub struct RawClient {
    pub stream: PacketStream<TcpStream>,
}

impl RawClient {
    /// Connects and logs in with mysql_native_password.
    pub async fn connect(
        port: u16,
        user: &str,
        password: &str,
        extra_caps: Caps,
    ) -> anyhow::Result<RawClient> {
        Self::login(
            port,
            user,
            password,
            extra_caps,
            MariadbCapabilities::empty(),
            Some("sluice_test"),
            None,
        )
        .await
    }

    /// Connects asking for MariaDB's extended capabilities `mariadb_caps`
    /// too (announced by clearing CLIENT_MYSQL).
    pub async fn connect_mariadb(
        port: u16,
        extra_caps: Caps,
        mariadb_caps: MariadbCapabilities,
    ) -> anyhow::Result<RawClient> {
        Self::login(
            port,
            "app",
            "app",
            extra_caps,
            mariadb_caps,
            Some("sluice_test"),
            None,
        )
        .await
    }

    /// Connects as a driver does whose handshake names `collation` (mysql2
    /// sends 224, utf8mb4_unicode_ci) and sends no `SET NAMES` after.
    pub async fn connect_with_collation(
        port: u16,
        extra_caps: Caps,
        collation: u8,
    ) -> anyhow::Result<RawClient> {
        Self::login(
            port,
            "app",
            "app",
            extra_caps,
            MariadbCapabilities::empty(),
            Some("sluice_test"),
            Some(collation),
        )
        .await
    }

    /// Logs in without a schema, with a driver's multi-result bits: its
    /// statements share the pool of real drivers' clients (the bits are
    /// part of Sluice's pool key).
    pub async fn connect_without_schema(port: u16, user: &str, password: &str) -> anyhow::Result<RawClient> {
        Self::login(
            port,
            user,
            password,
            DRIVER_CAPS,
            MariadbCapabilities::empty(),
            None,
            None,
        )
        .await
    }

    /// Logs in; `collation` None: mysql_common's default for the server.
    #[allow(clippy::too_many_arguments)]
    async fn login(
        port: u16,
        user: &str,
        password: &str,
        extra_caps: Caps,
        mariadb_caps: MariadbCapabilities,
        schema: Option<&str>,
        collation: Option<u8>,
    ) -> anyhow::Result<RawClient> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let mut stream = PacketStream::new(tcp);
        let greeting = stream.read_packet().await?;
        let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload))?;
        let nonce = hs.nonce();
        let plugin = AuthPlugin::MysqlNativePassword;
        let data = plugin.gen_data(Some(password), &nonce);
        let mut caps = Caps::CLIENT_PROTOCOL_41
            | Caps::CLIENT_SECURE_CONNECTION
            | Caps::CLIENT_PLUGIN_AUTH
            | Caps::CLIENT_LONG_PASSWORD
            | Caps::CLIENT_TRANSACTIONS
            | extra_caps;
        if !mariadb_caps.is_empty() {
            caps.remove(Caps::CLIENT_LONG_PASSWORD);
        }
        let resp = HandshakeResponse::new(
            data.as_deref(),
            (10, 11, 0),
            Some(user.as_bytes()),
            schema.map(str::as_bytes),
            Some(plugin),
            caps,
            None,
            1 << 24,
        )
        .with_mariadb_ext_capabilities(mariadb_caps);
        let mut buf = Vec::new();
        resp.serialize(&mut buf);
        if let Some(collation) = collation {
            // After the capabilities (4 bytes) and the maximum packet size (4).
            buf[8] = collation;
        }
        stream.send(1, &buf).await?;
        let reply = stream.read_packet().await?;
        anyhow::ensure!(
            reply.payload.first() == Some(&0),
            "login failed: {:?}",
            String::from_utf8_lossy(&reply.payload)
        );
        Ok(RawClient { stream })
    }

    pub async fn command(&mut self, payload: &[u8]) -> anyhow::Result<Packet> {
        self.stream.send(0, payload).await?;
        Ok(self.stream.read_packet().await?)
    }

    /// Reads packets until one satisfies `last`, returning them all.
    pub async fn read_until(&mut self, last: impl Fn(&Packet) -> bool) -> anyhow::Result<Vec<Packet>> {
        let mut out = Vec::new();
        loop {
            let p = self.stream.read_packet().await?;
            let done = last(&p);
            out.push(p);
            if done {
                return Ok(out);
            }
        }
    }
}

/// The error code of an ERR payload.
pub fn err_code(payload: &[u8]) -> Option<u16> {
    (payload.first() == Some(&0xff)).then(|| u16::from_le_bytes([payload[1], payload[2]]))
}
