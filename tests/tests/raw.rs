//! Protocol cases a driver does not produce: COM_FIELD_LIST,
//! COM_STATISTICS, unsupported commands, malformed and oversized packets.

use mysql_common::constants::CapabilityFlags as Caps;
use sluice_tests::raw::{RawClient, err_code};
use sluice_tests::{Sluice, SluiceOptions};

#[tokio::test]
async fn field_list_and_statistics() {
    let s = Sluice::start();
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    let r = c
        .command(b"\x03CREATE TABLE IF NOT EXISTS raw_fl (a INT, b VARCHAR(3))")
        .await
        .unwrap();
    assert_eq!(r.payload[0], 0, "{:?}", String::from_utf8_lossy(&r.payload));
    let mut p = vec![0x04];
    p.extend_from_slice(b"raw_fl\0");
    c.stream.send(0, &p).await.unwrap();
    let packets = c
        .read_until(|p| p.payload.first() == Some(&0xfe) && p.payload.len() < 9)
        .await
        .unwrap();
    assert_eq!(packets.len(), 3, "two column definitions and an EOF");

    let stats = c.command(&[0x09]).await.unwrap();
    assert!(
        String::from_utf8_lossy(&stats.payload).contains("Uptime"),
        "COM_STATISTICS answers"
    );

    // The same with CLIENT_DEPRECATE_EOF: the list ends in an OK with a 0xfe header.
    let mut c = RawClient::connect(s.port, "app", "app", Caps::CLIENT_DEPRECATE_EOF)
        .await
        .unwrap();
    c.stream.send(0, &p).await.unwrap();
    let packets = c.read_until(|p| p.payload.first() == Some(&0xfe)).await.unwrap();
    assert_eq!(packets.len(), 3);
}

#[tokio::test]
async fn unsupported_command_gets_a_named_error() {
    let s = Sluice::start();
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    let r = c.command(&[0x12, 0, 0, 0, 0]).await.unwrap(); // COM_BINLOG_DUMP
    assert_eq!(err_code(&r.payload), Some(1047));
    assert!(String::from_utf8_lossy(&r.payload).contains("COM_BINLOG_DUMP"));
    // The connection keeps working.
    let r = c.command(&[0x0e]).await.unwrap();
    assert_eq!(r.payload[0], 0);
}

#[tokio::test]
async fn malformed_and_oversized_packets_close_only_that_client() {
    let s = Sluice::start_with(SluiceOptions {
        extra: String::new(),
        ..SluiceOptions::default()
    });
    let mut bystander = mysql_async::Conn::new(s.opts()).await.unwrap();

    // Wrong sequence id.
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    c.stream.send(5, b"\x03SELECT 1").await.unwrap();
    let r = c.stream.read_packet().await.unwrap();
    assert_eq!(err_code(&r.payload), Some(1156));
    assert!(
        c.stream.read_packet().await.is_err(),
        "connection closed after the error"
    );

    // Empty command packet.
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    c.stream.send(0, b"").await.unwrap();
    let r = c.stream.read_packet().await.unwrap();
    assert_eq!(err_code(&r.payload), Some(1835));

    use mysql_async::prelude::Queryable;
    let one: Option<i32> = bystander.query_first("SELECT 1").await.unwrap();
    assert_eq!(one, Some(1), "other clients are unaffected");
}

#[tokio::test]
async fn oversized_packet_is_refused() {
    let s = Sluice::start_with(SluiceOptions {
        extra: String::new(),
        ..SluiceOptions::default()
    });
    let mut c = RawClient::connect(s.port, "app", "app", Caps::empty())
        .await
        .unwrap();
    // 70 MiB command: above the default server.max_packet_bytes (64 MiB).
    let mut big = vec![b'x'; 70 << 20];
    big[0] = 0x03;
    let _ = c.stream.send(0, &big).await;
    let r = c.stream.read_packet().await.unwrap();
    assert_eq!(err_code(&r.payload), Some(1153));
}
