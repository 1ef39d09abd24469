//! Connections to the writer with the monitor's account, built the way the
//! monitor builds its own (TCP, never a socket).

/// Opens a mysql_async connection to `address` (`host:port`, `[v6]:port`).
pub async fn connect(
    address: &str,
    user: &str,
    password: &str,
) -> Result<mysql_async::Conn, mysql_async::Error> {
    let (host, port) = address.rsplit_once(':').unwrap_or((address, "3306"));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(host.to_string())
        .tcp_port(port.parse().unwrap_or(3306))
        .user(Some(user))
        .pass(Some(password))
        .prefer_socket(false);
    mysql_async::Conn::new(opts).await
}
