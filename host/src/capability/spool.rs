//! The data of a `wasi:blobstore` outgoing value, between the component's output stream and
//! the upload to the provider. The interface does not order `write-body`, `write-data` and the
//! writes, and components built for other hosts write the whole body before `write-data`; so
//! until `write-data` the data is spooled (in memory, then in an unlinked temporary file, up to
//! a limit), and after it the writes flow through a bounded pipe into the upload. The upload
//! ends only with `finish`: a value dropped unfinished ends it with an error, so the provider
//! discards the object instead of storing a truncated one.

use std::{
    io,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll},
};

use crate::budget::{Budget, Reservation};
use bytes::BytesMut;
use ferry_lattice::stream::ByteStream;
use ferry_proto::RpcError;
use futures::StreamExt as _;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncSeekExt as _, AsyncWrite, AsyncWriteExt as _, DuplexStream};
use tokio_util::io::ReaderStream;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, pipe::AsyncWriteStream};

/// Bytes spooled in memory before the spool moves on to a temporary file.
const MEMORY_SPOOL: usize = 256 * 1024;
/// Bytes buffered between the component's writes and the upload once it runs.
const PIPE: usize = 256 * 1024;
/// Bytes read from the spool or the pipe at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes a component may write to a value's stream before its writes wait for the sink.
const STREAM_BUFFER: usize = 64 * 1024;
/// How long dropping a value's stream waits for its buffered writes to reach the value.
const DRAIN_ON_DROP: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the component's writes go now.
enum Sink {
    /// `write-data` was not called yet.
    Spool(Spool),
    /// The upload runs and reads the other end.
    Live(DuplexStream),
    /// `finish` was called (`finished`), or the value was dropped without it.
    Closed { finished: bool },
}

/// Data written before `write-data`: the first bytes in memory, the rest in a file, held
/// against the component's spool budget (shared by all its values) until uploaded.
struct Spool {
    memory: BytesMut,
    file: Option<tokio::fs::File>,
    len: u64,
    reservation: Reservation,
    /// A write went past `limit`: the value can no longer be uploaded whole.
    overflowed: bool,
}

impl Spool {
    fn poll_push(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let more = (self.len + buf.len() as u64).saturating_sub(self.reservation.held());
        if more > 0 && !self.reservation.grow(more) {
            self.overflowed = true;
            let limit = self.reservation.budget().limit();
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::StorageFull, overflow(limit))));
        }
        if self.file.is_none() && self.memory.len() + buf.len() <= MEMORY_SPOOL {
            self.memory.extend_from_slice(buf);
            self.len += buf.len() as u64;
            return Poll::Ready(Ok(buf.len()));
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => match tempfile::tempfile() {
                Ok(file) => self.file.insert(tokio::fs::File::from_std(file)),
                Err(err) => {
                    return Poll::Ready(Err(io::Error::new(err.kind(), format!("cannot spool the value: {err}"))));
                }
            },
        };
        let written = std::task::ready!(Pin::new(file).poll_write(cx, buf))?;
        self.len += written as u64;
        Poll::Ready(Ok(written))
    }

    /// The spooled bytes, in the order they were written, and the reservation they hold until
    /// read.
    async fn into_reader(self) -> io::Result<(Box<dyn AsyncRead + Send + Unpin>, Reservation)> {
        let memory = io::Cursor::new(self.memory.freeze());
        match self.file {
            None => Ok((Box::new(memory), self.reservation)),
            Some(mut file) => {
                // Completes a write still in flight before reading from the start.
                file.flush().await?;
                file.rewind().await?;
                Ok((Box::new(memory.chain(file)), self.reservation))
            }
        }
    }
}

/// The data of one outgoing value. Dropping it without [`OutgoingData::finish`] abandons the
/// upload.
pub(crate) struct OutgoingData {
    sink: Arc<Mutex<Sink>>,
    body_taken: bool,
}

impl OutgoingData {
    /// A value whose data before `write-data` is held against `budget`, shared with the
    /// component's other values.
    pub(crate) fn new(budget: Arc<Budget>) -> Self {
        let reservation = Reservation::new(budget);
        let spool = Spool { memory: BytesMut::new(), file: None, len: 0, reservation, overflowed: false };
        Self { sink: Arc::new(Mutex::new(Sink::Spool(spool))), body_taken: false }
    }

    /// The writer behind the value's output stream; `None` after the first call.
    pub(crate) fn body(&mut self) -> Option<SinkWriter> {
        if self.body_taken {
            return None;
        }
        self.body_taken = true;
        Some(SinkWriter(self.sink.clone()))
    }

    /// The value's output stream; `None` after the first call. Writes go through a bounded
    /// buffer; dropping the stream first lets what was written reach the value (see
    /// [`DrainingWriteStream`]).
    pub(crate) fn output_stream(&mut self) -> Option<DrainingWriteStream> {
        self.body().map(|writer| DrainingWriteStream(AsyncWriteStream::new(STREAM_BUFFER, writer)))
    }

    /// Switch to streaming for `write-data`: what was spooled, then what the component writes
    /// from now on, ending when the value is finished.
    ///
    /// # Errors
    /// `bad-request` when `write-data` was already called, the value finished, or the spool
    /// overflowed; `internal` when the spool file cannot be read back.
    pub(crate) async fn upload(&self) -> Result<ByteStream, RpcError> {
        let (writer, reader) = tokio::io::duplex(PIPE);
        let spool = {
            let mut sink = lock(&self.sink);
            match std::mem::replace(&mut *sink, Sink::Live(writer)) {
                Sink::Spool(spool) if !spool.overflowed => spool,
                other => {
                    let err = match &other {
                        Sink::Spool(spool) => RpcError::bad_request(overflow(spool.reservation.budget().limit())),
                        Sink::Live(_) => RpcError::bad_request("write-data was already called for this value"),
                        Sink::Closed { .. } => RpcError::bad_request("this value was already finished"),
                    };
                    *sink = other;
                    return Err(err);
                }
            }
        };
        let (spooled, reservation) = spool
            .into_reader()
            .await
            .map_err(|e| RpcError::internal(format!("cannot read back the spooled value: {e}")))?;
        let data = ReaderStream::with_capacity(spooled.chain(reader), READ_CHUNK).map(move |chunk| {
            // The spooled bytes count against the budget until the upload is done with them.
            let _held = &reservation;
            chunk.map_err(|e| RpcError::internal(format!("reading the component's data failed: {e}")))
        });
        // The pipe closes only when the value is finished or dropped; which one decides
        // whether the upload ends cleanly.
        let sink = self.sink.clone();
        let end = futures::stream::once(async move {
            match &*lock(&sink) {
                Sink::Closed { finished: true } => None,
                _ => Some(Err(RpcError::bad_request(
                    "the outgoing value was dropped without finish; the object was not written",
                ))),
            }
        })
        .filter_map(std::future::ready);
        Ok(Box::pin(data.chain(end)))
    }

    /// `finish`: the data is complete; the upload reads to its end.
    pub(crate) fn finish(&self) {
        self.close(true);
    }

    fn close(&self, finished: bool) {
        let mut sink = lock(&self.sink);
        if !matches!(*sink, Sink::Closed { finished: true }) {
            // Dropping a live pipe's writer is what ends the upload's input.
            *sink = Sink::Closed { finished };
        }
    }
}

impl Drop for OutgoingData {
    fn drop(&mut self) {
        self.close(false);
    }
}

/// The output stream a component writes a value's body to. Unlike a plain
/// [`AsyncWriteStream`], dropping it does not throw away writes still buffered: components
/// built for other hosts write without a blocking flush and drop the stream at once, and their
/// data must still reach the value. The wait is bounded by [`DRAIN_ON_DROP`].
pub(crate) struct DrainingWriteStream(AsyncWriteStream);

#[async_trait::async_trait]
impl OutputStream for DrainingWriteStream {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        self.0.write(bytes)
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        self.0.flush()
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        self.0.check_write()
    }

    async fn cancel(&mut self) {
        // Flushing drains the buffered writes first; a failed or closed sink ends the wait.
        if self.0.flush().is_ok() {
            let _ = tokio::time::timeout(DRAIN_ON_DROP, self.0.ready()).await;
        }
        self.0.cancel().await;
    }
}

#[async_trait::async_trait]
impl Pollable for DrainingWriteStream {
    async fn ready(&mut self) {
        self.0.ready().await;
    }
}

/// The component's output stream writes here: into the spool or the live pipe.
pub(crate) struct SinkWriter(Arc<Mutex<Sink>>);

impl AsyncWrite for SinkWriter {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut *lock(&self.0) {
            Sink::Spool(spool) => spool.poll_push(cx, buf),
            Sink::Live(pipe) => Pin::new(pipe).poll_write(cx, buf),
            Sink::Closed { .. } => Poll::Ready(Err(closed())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut *lock(&self.0) {
            Sink::Spool(Spool { file: Some(file), .. }) => Pin::new(file).poll_flush(cx),
            Sink::Spool(_) => Poll::Ready(Ok(())),
            Sink::Live(pipe) => Pin::new(pipe).poll_flush(cx),
            Sink::Closed { .. } => Poll::Ready(Err(closed())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The data ends with `finish`, not with the stream.
        Poll::Ready(Ok(()))
    }
}

/// Why a value that outgrew the spool cannot be written.
fn overflow(limit: u64) -> String {
    format!(
        "the component's values hold more than {limit} bytes written before write-data; call write-data first to stream a value of any size"
    )
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the outgoing value was finished or dropped")
}

fn lock(sink: &Mutex<Sink>) -> MutexGuard<'_, Sink> {
    sink.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(writer: &mut SinkWriter, bytes: &[u8]) -> io::Result<()> {
        writer.write_all(bytes).await?;
        writer.flush().await
    }

    async fn collect(mut data: ByteStream) -> Result<Vec<u8>, RpcError> {
        let mut out = Vec::new();
        while let Some(chunk) = data.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn body_written_before_write_data_is_uploaded_in_order() {
        let bytes = pattern(3 * MEMORY_SPOOL + 123);
        let mut value = OutgoingData::new(Budget::new(1 << 30));
        let mut writer = value.body().expect("first body");
        assert!(value.body().is_none(), "the body is taken once");
        // Some in memory, the rest in the file, then live.
        write(&mut writer, &bytes[..1000]).await.expect("spooled in memory");
        write(&mut writer, &bytes[1000..2 * MEMORY_SPOOL]).await.expect("spooled in the file");
        let data = value.upload().await.expect("upload starts");
        let reading = tokio::spawn(collect(data));
        write(&mut writer, &bytes[2 * MEMORY_SPOOL..]).await.expect("live");
        value.finish();
        assert_eq!(reading.await.expect("joined").expect("clean end"), bytes);
    }

    #[tokio::test]
    async fn a_body_written_and_dropped_unflushed_before_write_data_is_uploaded() {
        use wasmtime_wasi::p2::OutputStream as _;
        // What components built for wasmCloud do: a non-blocking write (and flush), then drop
        // the stream at once.
        let mut value = OutgoingData::new(Budget::new(1 << 30));
        let mut stream = value.output_stream().expect("body");
        stream.write(bytes::Bytes::from_static(b"meow")).expect("written");
        stream.flush().expect("flushed");
        stream.cancel().await;
        drop(stream);
        let data = value.upload().await.expect("upload starts");
        let reading = tokio::spawn(collect(data));
        value.finish();
        assert_eq!(reading.await.expect("joined").expect("clean end"), b"meow");
    }

    #[tokio::test]
    async fn dropping_an_unfinished_value_fails_the_upload() {
        let mut value = OutgoingData::new(Budget::new(1 << 30));
        let mut writer = value.body().expect("body");
        let data = value.upload().await.expect("upload starts");
        write(&mut writer, b"partial").await.expect("written");
        drop(value);
        let err = collect(data).await.expect_err("an abandoned value must not end cleanly");
        assert!(err.to_string().contains("without finish"), "{err}");
        assert!(write(&mut writer, b"more").await.is_err(), "writes after drop fail");
    }

    #[tokio::test]
    async fn the_spool_limit_is_enforced_and_remembered() {
        let budget = Budget::new(1000);
        let mut value = OutgoingData::new(budget.clone());
        let mut writer = value.body().expect("body");
        write(&mut writer, &[7; 600]).await.expect("within the limit");
        assert!(write(&mut writer, &[7; 600]).await.is_err(), "past the limit");
        let Err(err) = value.upload().await else { panic!("an overflowed value must not upload") };
        assert!(err.to_string().contains("write-data first"), "{err}");

        // The limit is the component's, across its values: another value has only what is left.
        let mut other = OutgoingData::new(budget.clone());
        let mut other_writer = other.body().expect("body");
        assert!(write(&mut other_writer, &[7; 600]).await.is_err(), "the first value still holds 600");
        drop((value, writer));
        let mut third = OutgoingData::new(budget.clone());
        let mut third_writer = third.body().expect("body");
        write(&mut third_writer, &[7; 900]).await.expect("the first value's share came back");
        assert!(budget.used() >= 900);
    }

    #[tokio::test]
    async fn write_data_twice_or_after_finish_is_refused() {
        let value = OutgoingData::new(Budget::new(1 << 20));
        let _data = value.upload().await.expect("first");
        assert!(value.upload().await.is_err(), "second write-data");
        value.finish();
        assert!(value.upload().await.is_err(), "after finish");
    }
}
