//! The bridge's Unix socket to the foreign process, woken only when there is something to read.
//!
//! tokio registers a `UnixStream` for write readiness as well as read readiness, and a Unix
//! socket signals write space every time its peer reads from it. So every forwarded call woke
//! the bridge once more, for nothing, while the foreign process read the request and worked on
//! it — on a machine with few cores, a wake-up that competes with the process it waits for.
//! This stream is registered for reads only; a write is tried at once, and only one that finds
//! the socket full waits for write space (through a second descriptor registered for that
//! alone, dropped as soon as the write goes through).

use std::{
    io::{self, IoSlice, Read as _, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    path::Path,
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf, unix::AsyncFd};

/// A connected Unix stream socket that wakes its task only to read (and to write when full).
pub(crate) struct ReadWoken {
    socket: AsyncFd<std::os::unix::net::UnixStream>,
    /// Registered for write space while a write waits for it.
    write_space: Option<AsyncFd<OwnedFd>>,
}

impl ReadWoken {
    /// Connect to the socket at `path`.
    pub(crate) async fn connect(path: &Path) -> io::Result<Self> {
        let stream = tokio::net::UnixStream::connect(path).await?.into_std()?;
        stream.set_nonblocking(true)?;
        Ok(Self { socket: register(stream, Interest::READABLE)?, write_space: None })
    }

    /// Try `write` until it goes through, waiting for write space while the socket is full.
    fn poll_with(
        &mut self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&std::os::unix::net::UnixStream) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            match write(self.socket.get_ref()) {
                Ok(n) => {
                    self.write_space = None;
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let waiter = match &mut self.write_space {
                        Some(waiter) => waiter,
                        // Registered now, it reports write space that came since the attempt.
                        None => self
                            .write_space
                            .insert(register(self.socket.get_ref().as_fd().try_clone_to_owned()?, Interest::WRITABLE)?),
                    };
                    ready!(waiter.poll_write_ready(cx))?.clear_ready();
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Register `owner` of a descriptor with the runtime for `interest`.
#[expect(
    deprecated,
    reason = "tokio deprecates the safe constructor because an arbitrary AsRawFd type may close or swap its descriptor; UnixStream and OwnedFd own theirs for their whole life, which is the condition its unsafe replacement states (and the workspace forbids unsafe code)"
)]
fn register<T: std::os::fd::AsRawFd + Into<OwnedFd>>(owner: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    AsyncFd::with_interest(owner, interest)
}

impl AsyncRead for ReadWoken {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let mut guard = ready!(this.socket.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|socket| socket.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Drained: the readiness is cleared, wait for the next.
                Err(_would_block) => {}
            }
        }
    }
}

impl AsyncWrite for ReadWoken {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_with(cx, |mut socket| socket.write(data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_with(cx, |mut socket| socket.write_vectored(data))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(self.socket.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn bytes_cross_both_ways_and_a_write_larger_than_the_socket_holds_waits_for_space() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let mut client = ReadWoken::connect(&path).await.expect("connect");
        let (mut server, _) = listener.accept().await.expect("accept");

        client.write_all(b"ping").await.expect("write");
        let mut four = [0; 4];
        server.read_exact(&mut four).await.expect("read");
        assert_eq!(&four, b"ping");
        server.write_all(b"pong").await.expect("write");
        client.read_exact(&mut four).await.expect("read");
        assert_eq!(&four, b"pong");

        // Far more than a socket buffers: the writer must wait for the reader, and finish.
        let big: Vec<u8> = (0..8 << 20).map(|i: u32| i as u8).collect();
        let expected = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&big).await.expect("write all");
            client.shutdown().await.expect("shutdown");
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.expect("read to end");
        assert!(got == expected, "the bytes arrived in order and whole");
        let client = writer.await.expect("writer");
        assert!(client.write_space.is_none(), "no write-space registration is left behind");
    }
}
