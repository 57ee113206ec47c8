//! Binary mode: 4-byte big-endian length-prefixed postcard frames, opened by a `hello` that
//! carries credentials, then the shared session pump.

use crate::Error;
use crate::close::{CloseCause, linger};
use crate::config::SIGN_IN_REFUSED;
use crate::server::Inner;
use crate::stats::Counters;
use bytes::{Bytes, BytesMut};
use chat_core::conn::{CodecChoice, FrameReader, FrameWriter, Inbound, PumpEnd, pump};
use chat_core::protocol::{ClientFrame, HelloAuth, RequestId, ServerFrame};
use chat_core::{Codec, ErrorCode, Outbox, Outgoing, Request, Session};
use futures_util::{SinkExt, StreamExt};
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use tokio_util::codec::{
    Decoder, FramedRead, FramedWrite, LengthDelimitedCodec, LengthDelimitedCodecError,
};

/// The length prefix: 4 bytes, big endian.
const PREFIX: usize = 4;

/// tokio-util's [`LengthDelimitedCodec`], with the two failures a client can cause given their
/// own [`Error`] variants: a length prefix over the maximum (which the inner codec detects from
/// the prefix alone, before it reserves anything) and an end of stream in the middle of a
/// frame.
pub(crate) struct BinaryCodec {
    inner: LengthDelimitedCodec,
    max: usize,
}

impl BinaryCodec {
    pub(crate) fn new(max: usize) -> BinaryCodec {
        BinaryCodec {
            inner: LengthDelimitedCodec::builder()
                .length_field_length(PREFIX)
                .big_endian()
                .max_frame_length(max)
                .new_codec(),
            max,
        }
    }
}

impl Decoder for BinaryCodec {
    type Item = Bytes;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.inner.decode(src) {
            Ok(frame) => Ok(frame.map(BytesMut::freeze)),
            // The inner codec checks the prefix before it reserves room for the frame, and
            // fails without consuming it: the prefix is still at the front of `src`.
            Err(e)
                if e.get_ref()
                    .is_some_and(|e| e.is::<LengthDelimitedCodecError>()) =>
            {
                let len = match src.get(..PREFIX) {
                    Some(&[a, b, c, d]) => u64::from(u32::from_be_bytes([a, b, c, d])),
                    _ => 0,
                };
                Err(Error::FrameTooLarge { len, max: self.max })
            }
            Err(e) => Err(Error::Io(e)),
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            // A prefix with only part of its frame behind it: dropped, never decoded.
            None => Err(Error::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

/// The read half, as the pump sees it: every frame is postcard.
pub(crate) struct BinReader<R> {
    frames: FramedRead<R, BinaryCodec>,
}

impl<R: AsyncRead + Unpin> BinReader<R> {
    pub(crate) fn new(read: R, max_frame: usize, capacity: usize) -> BinReader<R> {
        let frames = FramedRead::with_capacity(read, BinaryCodec::new(max_frame), capacity);
        BinReader { frames }
    }
}

impl<R: AsyncRead + Unpin + Send> FrameReader for BinReader<R> {
    type Error = Error;

    async fn read(&mut self) -> Result<Option<Inbound>, Error> {
        // `StreamExt::next` on a `FramedRead` is cancel-safe, as the pump requires: a partial
        // frame stays in the read buffer.
        match self.frames.next().await {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(bytes)) => Ok(Some(Inbound::Frame {
                codec: Codec::Postcard,
                bytes,
            })),
        }
    }
}

/// The write half: frames are fed into tokio-util's encoder buffer and flushed once per batch.
pub(crate) struct BinWriter<W> {
    frames: FramedWrite<W, LengthDelimitedCodec>,
    /// The keepalive frame, encoded once per connection: an unsolicited `pong`.
    keepalive: Bytes,
}

impl<W: AsyncWrite + Unpin> BinWriter<W> {
    pub(crate) fn new(write: W, max_write_frame: usize) -> BinWriter<W> {
        let codec = LengthDelimitedCodec::builder()
            .length_field_length(PREFIX)
            .big_endian()
            .max_frame_length(max_write_frame)
            .new_codec();
        let mut frames = FramedWrite::new(write, codec);
        // tokio-util starts every write buffer at 8 KiB; most connections are idle and their
        // frames small, so start empty and let it grow to what is actually written (it keeps
        // that capacity, bounded by the largest batch).
        *frames.write_buffer_mut() = bytes::BytesMut::new();
        BinWriter {
            frames,
            keepalive: Outgoing::event(ServerFrame::Pong).encoded(Codec::Postcard),
        }
    }

    /// Writes one error frame and flushes.
    async fn send_error(
        &mut self,
        id: Option<RequestId>,
        code: ErrorCode,
        message: String,
    ) -> Result<(), Error> {
        let frame = Outgoing::new(id, ServerFrame::Error { code, message });
        self.frames.feed(frame.encoded(Codec::Postcard)).await?;
        SinkExt::<Bytes>::flush(&mut self.frames).await?;
        Ok(())
    }
}

impl<W: AsyncWrite + Unpin + Send> FrameWriter for BinWriter<W> {
    type Error = Error;

    async fn feed(&mut self, _codec: Codec, bytes: Bytes) -> Result<(), Error> {
        // `feed`, not `send`: no flush per frame; the pump flushes once per batch. The encoder
        // writes to the socket by itself when its buffer passes 8 KiB.
        Ok(self.frames.feed(bytes).await?)
    }

    async fn flush(&mut self) -> Result<(), Error> {
        Ok(SinkExt::<Bytes>::flush(&mut self.frames).await?)
    }

    fn probe(&mut self) -> impl Future<Output = Result<(), Error>> + Send {
        let keepalive = self.keepalive.clone();
        async move { Ok(self.frames.feed(keepalive).await?) }
    }
}

/// Runs a binary connection from `peer` from its first bytes to its close.
pub(crate) async fn run<R, W>(
    server: &Inner,
    read: R,
    write: W,
    accepted: Instant,
    peer: IpAddr,
) -> CloseCause
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let config = &server.config;
    let mut reader = BinReader::new(read, config.max_frame_bytes, config.read_buffer_bytes);
    let mut writer = BinWriter::new(write, config.max_write_frame_bytes);
    let c = &server.counters;
    // The length a too-large frame announced, for the error.
    let mut announced = None;

    let cause = match authenticate(server, &mut reader, &mut writer, accepted, peer).await {
        Ok((session, outbox)) => {
            Counters::bump(&c.binary_sessions);
            c.open_binary.fetch_add(1, Ordering::Relaxed);
            let session_id = session.id();
            let end = pump(
                session,
                outbox,
                &mut reader,
                &mut writer,
                CodecChoice::Fixed(Codec::Postcard),
                &config.binary_pump(),
                &server.shutdown,
            )
            .await;
            Counters::drop_one(&c.open_binary);
            let cause = CloseCause::of(&end);
            tracing::debug!(session = %session_id, cause = cause.as_str(), ?end, "binary connection ended");
            if let PumpEnd::ReadError(Error::FrameTooLarge { len, .. }) = end {
                announced = Some(len);
            }
            cause
        }
        Err((cause, len)) => {
            tracing::debug!(
                cause = cause.as_str(),
                "binary connection ended before its hello"
            );
            announced = len;
            cause
        }
    };
    server.count(cause);
    goodbye(server, &mut reader, &mut writer, cause, announced).await;
    cause
}

/// The first exchange: one frame, which must be a `hello` with `auth`, by `accepted +
/// auth_timeout`. On failure the client has been sent the error (with the hello's id when it
/// had one) and the connection is to be closed; a too-large first frame's announced length
/// comes back with the cause, for the goodbye to name it. A `hello` with a login or a guest
/// name is first put to the [`SignInGate`](crate::SignInGate), if there is one.
async fn authenticate<R, W>(
    server: &Inner,
    reader: &mut BinReader<R>,
    writer: &mut BinWriter<W>,
    accepted: Instant,
    peer: IpAddr,
) -> Result<(Session, Outbox), (CloseCause, Option<u64>)>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let config = &server.config;
    let c = &server.counters;
    let deadline = accepted + config.auth_timeout;
    let next = tokio::select! {
        biased;
        () = server.shutdown.triggered() => return Err((CloseCause::Shutdown, None)),
        next = tokio::time::timeout_at(deadline, reader.frames.next()) => next,
    };
    let bytes = match next {
        Err(_elapsed) => {
            Counters::bump(&c.auth_timeout);
            let message = format!(
                "authentication timed out: send a `hello` with `auth` within {} of connecting",
                crate::close::human(config.auth_timeout)
            );
            let answer = writer.send_error(None, ErrorCode::Unauthenticated, message);
            let _ = tokio::time::timeout(config.write_timeout, answer).await;
            return Err((CloseCause::Unauthenticated, None));
        }
        Ok(None) => return Err((CloseCause::PeerClosed, None)),
        Ok(Some(Err(e))) => {
            let len = match e {
                Error::FrameTooLarge { len, .. } => Some(len),
                _ => None,
            };
            return Err((CloseCause::of_error(&e), len));
        }
        Ok(Some(Ok(bytes))) => bytes,
    };
    let (id, opened) = match Codec::Postcard.decode_request(&bytes) {
        // Credentials that cost a password hash (or create a guest) are attempts against the
        // per-address budget; a refused one is never tried.
        Ok(Request {
            id,
            frame: ClientFrame::Hello(hello),
        }) if matches!(
            hello.auth,
            Some(HelloAuth::Login { .. } | HelloAuth::Guest(_))
        ) && !config.admit_sign_in(peer) =>
        {
            Counters::bump(&c.auth_gated);
            let answer = writer.send_error(id, ErrorCode::RateLimited, SIGN_IN_REFUSED.into());
            let _ = tokio::time::timeout(config.write_timeout, answer).await;
            return Err((CloseCause::Unauthenticated, None));
        }
        // A `hello` without `auth` is refused by the engine as `unauthenticated`.
        Ok(Request {
            id,
            frame: ClientFrame::Hello(hello),
        }) => (id, server.engine.open_with_hello(&hello, id).await),
        Ok(Request { id, .. }) => (id, Err(chat_core::Error::Unauthenticated)),
        Err(e) => (Codec::Postcard.request_id_hint(&bytes), Err(e)),
    };
    match opened {
        Ok(opened) => Ok(opened),
        Err(e) => {
            Counters::bump(&c.auth_failed);
            let message = match &e {
                chat_core::Error::Unauthenticated => {
                    "not authenticated: the first frame must be a `hello` with `auth`".to_string()
                }
                other => other.public_message(),
            };
            let answer = writer.send_error(id, e.code(), message);
            let _ = tokio::time::timeout(config.write_timeout, answer).await;
            Err((CloseCause::Unauthenticated, None))
        }
    }
}

/// The last frame (if the cause has one), our end of stream, then the lingering close.
async fn goodbye<R, W>(
    server: &Inner,
    reader: &mut BinReader<R>,
    writer: &mut BinWriter<W>,
    cause: CloseCause,
    announced: Option<u64>,
) where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    let config = &server.config;
    let farewell = match cause {
        CloseCause::FrameTooLarge => Some((
            ErrorCode::BadFrame,
            match announced {
                Some(len) => format!(
                    "a frame of {len} bytes exceeds the maximum of {} bytes",
                    config.max_frame_bytes
                ),
                None => format!(
                    "a frame exceeds the maximum of {} bytes",
                    config.max_frame_bytes
                ),
            },
        )),
        other => other
            .binary_farewell()
            .map(|(code, text)| (code, text.to_string())),
    };
    let last = async {
        if let Some((code, text)) = farewell {
            let message = format!("{}: {text}", cause.as_str());
            writer.send_error(None, code, message).await?;
        }
        futures_util::SinkExt::<Bytes>::close(&mut writer.frames).await?;
        Ok::<(), Error>(())
    };
    let sent = match cause {
        // Nobody is there to read it.
        CloseCause::Io | CloseCause::PeerClosed | CloseCause::Truncated => false,
        // Bounded by `close_timeout`, not `write_timeout`: a slow consumer's socket is full,
        // and its last frame is a courtesy, not worth holding the connection for.
        _ => tokio::time::timeout(config.close_timeout, last)
            .await
            .is_ok_and(|r| r.is_ok()),
    };
    if sent {
        linger(reader.frames.get_mut(), config.close_timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_prefix_fails_from_the_prefix_alone_without_reserving_its_length() {
        let mut codec = BinaryCodec::new(64 * 1024);
        let mut src = BytesMut::with_capacity(16);
        src.extend_from_slice(&[0x00, 0xff, 0xff, 0xff, 1, 2]);
        match codec.decode(&mut src) {
            Err(Error::FrameTooLarge { len, max }) => {
                assert_eq!((len, max), (0x00ff_ffff, 64 * 1024));
            }
            other => panic!("{other:?}"),
        }
        assert!(src.capacity() < 1024, "reserved {}", src.capacity());
    }

    #[test]
    fn frames_whole_split_and_cut_short() {
        let mut codec = BinaryCodec::new(16);
        let mut src = BytesMut::new();
        src.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(&[b'c', 0, 0, 0, 1]);
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(Bytes::from_static(b"abc"))
        );
        // The payload of a frame in progress is not mistaken for a prefix.
        assert_eq!(codec.decode(&mut src).unwrap(), None);
        src.extend_from_slice(&[0xff]);
        assert_eq!(
            codec.decode(&mut src).unwrap(),
            Some(Bytes::from_static(b"\xff"))
        );
        src.extend_from_slice(&[0, 0, 0, 9, 1]);
        assert!(matches!(
            codec.decode_eof(&mut src),
            Err(Error::Truncated { .. })
        ));
        let mut empty = BytesMut::new();
        assert_eq!(BinaryCodec::new(16).decode_eof(&mut empty).unwrap(), None);
    }
}
