//! The byte stream under a pooled backend connection: plain TCP, or TLS
//! over TCP when the backend's `tls` mode asked for it and the server
//! agreed. One concrete type, so `BackendConn`'s default stays one type and
//! the relay's packet loop is compiled once; a poll is a match and a call,
//! no allocation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

#[derive(Debug)]
pub enum BackendStream {
    Plain(TcpStream),
    /// Boxed: the TLS state is large and most of it is not touched per poll.
    Tls(Box<TlsStream<TcpStream>>),
}

impl BackendStream {
    /// The TCP socket under it (for a non-blocking peek at a closed peer).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            BackendStream::Plain(tcp) => tcp,
            BackendStream::Tls(tls) => tls.get_ref().0,
        }
    }

    /// Writes `bytes` as far as the socket takes them now, without waiting
    /// (a goodbye on close); over TLS followed by the close_notify alert.
    /// True when all of it went out.
    pub fn send_now(&mut self, bytes: &[u8]) -> bool {
        match self {
            BackendStream::Plain(tcp) => matches!(tcp.try_write(bytes), Ok(n) if n == bytes.len()),
            BackendStream::Tls(tls) => {
                let (tcp, session) = tls.get_mut();
                if std::io::Write::write_all(&mut session.writer(), bytes).is_err() {
                    return false;
                }
                session.send_close_notify();
                let mut socket = NowWriter(tcp);
                while session.wants_write() {
                    if !matches!(session.write_tls(&mut socket), Ok(n) if n > 0) {
                        return false;
                    }
                }
                true
            }
        }
    }
}

/// `std::io::Write` over a socket's non-blocking `try_write`.
struct NowWriter<'a>(&'a TcpStream);

impl io::Write for NowWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for BackendStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for BackendStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
