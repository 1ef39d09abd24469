//! Authentication paths: a client that starts with caching_sha2_password is
//! answered in it (no switch), other plugins are switched to
//! mysql_native_password; backends that authenticate with
//! MariaDB's ed25519 plugin are reached with it.

use mysql_async::prelude::*;
use mysql_common::constants::CapabilityFlags as Caps;
use mysql_common::io::ParseBuf;
use mysql_common::packets::{AuthPlugin, AuthSwitchRequest, HandshakePacket, HandshakeResponse};
use mysql_common::proto::{MyDeserialize, MySerialize};
use sluice_protocol::PacketStream;
use sluice_tests::{Sluice, SluiceOptions};
use tokio::net::TcpStream;

/// Opens a raw connection and sends a handshake response made with
/// `plugin` for user app; returns the stream and the server's nonce.
async fn login_with(port: u16, plugin: AuthPlugin<'static>) -> (PacketStream<TcpStream>, Vec<u8>) {
    let mut stream = PacketStream::new(TcpStream::connect(("127.0.0.1", port)).await.unwrap());
    let greeting = stream.read_packet().await.unwrap();
    let hs = HandshakePacket::deserialize((), &mut ParseBuf(&greeting.payload)).unwrap();
    let nonce = hs.nonce();
    let data = plugin.gen_data(Some("app"), &nonce);
    let caps = Caps::CLIENT_PROTOCOL_41 | Caps::CLIENT_SECURE_CONNECTION | Caps::CLIENT_PLUGIN_AUTH;
    let resp = HandshakeResponse::new(
        data.as_deref(),
        (8, 0, 0),
        Some(&b"app"[..]),
        None::<&[u8]>,
        Some(plugin),
        caps,
        None,
        1 << 24,
    );
    let mut buf = Vec::new();
    resp.serialize(&mut buf);
    stream.send(1, &buf).await.unwrap();
    (stream, nonce)
}

#[tokio::test]
async fn caching_sha2_client_logs_in_without_a_switch() {
    let s = Sluice::start();
    let (mut stream, _) = login_with(s.port, AuthPlugin::CachingSha2Password).await;
    // As a MySQL 8 server with the user in its cache: fast auth succeeded
    // (AuthMoreData 0x03), then OK.
    let more = stream.read_packet().await.unwrap();
    assert_eq!(&more.payload[..], &[0x01, 0x03], "fast authentication succeeded");
    let ok = stream.read_packet().await.unwrap();
    assert_eq!(
        ok.payload[0],
        0,
        "logged in: {:?}",
        String::from_utf8_lossy(&ok.payload)
    );
}

#[tokio::test]
async fn another_plugin_is_switched_to_native() {
    let s = Sluice::start();
    let (mut stream, _) = login_with(s.port, AuthPlugin::Ed25519).await;
    let switch = stream.read_packet().await.unwrap();
    assert_eq!(switch.payload[0], 0xfe, "an auth switch request");
    let req = AuthSwitchRequest::deserialize((), &mut ParseBuf(&switch.payload)).unwrap();
    assert_eq!(req.auth_plugin().as_bytes(), b"mysql_native_password");
    // plugin_data() already drops the trailing NUL.
    let nonce = req.plugin_data().to_vec();
    let answer = AuthPlugin::MysqlNativePassword
        .gen_data(Some("app"), &nonce)
        .unwrap();
    stream.send(switch.seq + 1, &answer).await.unwrap();
    let ok = stream.read_packet().await.unwrap();
    assert_eq!(
        ok.payload[0],
        0,
        "logged in after the switch: {:?}",
        String::from_utf8_lossy(&ok.payload)
    );
}

#[tokio::test]
async fn ed25519_backend_user() {
    if std::env::var("SLUICE_TEST_ED25519").ok().as_deref() != Some("1") {
        panic!("the topology has no ed25519 user (auth_ed25519 plugin missing): SLUICE_TEST_ED25519 != 1");
    }
    let s = Sluice::start_with(SluiceOptions {
        extra_users: "[[users]]\nname = \"edapp\"\npassword = \"edpass\"\n".into(),
        ..SluiceOptions::default()
    });
    let opts = mysql_async::OptsBuilder::from_opts(s.opts())
        .user(Some("edapp"))
        .pass(Some("edpass"));
    let mut c = mysql_async::Conn::new(opts)
        .await
        .expect("client logs in with native, sluice reaches the backend with ed25519");
    let user: Option<String> = c.query_first("SELECT CURRENT_USER()").await.unwrap();
    assert!(user.unwrap().starts_with("edapp@"));
}
