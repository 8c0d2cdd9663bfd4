//! One load-generating client connection, from TCP connect to an open chat session:
//! ```text
//! [bind --source-ips] -> connect -> [PROXY v1|v2 header] -> GET upgrade -> 101 -> WebSocketStream
//!   -> [socketio: 0{open} -> 40 -> 40{..}] -> Tx (send chat) + Rx (read chat, answer pings)
//! ```
//! The handshake is written by hand so the PROXY header can go first on the same socket; the
//! bytes read past the 101 head are handed to `from_partially_read`, never dropped.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    sync::Arc,
    time::Duration,
};

use async_tungstenite::{
    tungstenite::{
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Message, Utf8Bytes,
    },
    WebSocketReceiver, WebSocketSender, WebSocketStream,
};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use smol::{lock::Mutex, Async, Timer};

use crate::{
    handshake,
    proxy_header::{self, ProxyVersion},
    socketio::{self, Packet},
    target::{Protocol, SourceIps, Url},
};

/// Read chunk while waiting for the 101 head.
const HEAD_READ_CHUNK: usize = 1024;
/// The WebSocket stream's read buffer: enough for dozens of small frames per `read`, and small
/// enough that 10,000 idle clients cost the tool 40 MB rather than tungstenite's default 1.3 GB.
const READ_BUFFER: usize = 4096;
/// Largest message or frame the tool accepts (our own are `--size` bytes plus framing).
const MAX_MESSAGE: usize = 1 << 20;
/// Most bytes queued for writing before `send` waits.
const MAX_WRITE_BUFFER: usize = 1 << 20;

pub(crate) type Stream = Async<TcpStream>;

/// Why a client could not open its session, as a short stable reason for the failure tally.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// Binding to the `--source-ips` address failed.
    Bind(io::Error),
    /// TCP connect failed (refused, no ports left, fd limit ...).
    Connect(io::Error),
    /// Writing the PROXY header or the request, or reading the response, failed.
    Io(io::Error),
    /// The server closed before a full response head.
    Eof,
    /// The response is not our 101.
    Handshake(handshake::Error),
    /// Socket.IO did not open: what arrived instead.
    SocketIo(String),
    /// No open session within `--connect-timeout`.
    Timeout,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Bind(e) => write!(f, "bind: {}", io_reason(e)),
            OpenError::Connect(e) => write!(f, "connect: {}", io_reason(e)),
            OpenError::Io(e) => write!(f, "io: {}", io_reason(e)),
            OpenError::Eof => write!(f, "closed before 101"),
            OpenError::Handshake(e) => write!(f, "handshake: {e}"),
            OpenError::SocketIo(what) => write!(f, "socketio: {what}"),
            OpenError::Timeout => write!(f, "timeout"),
        }
    }
}

/// An io error's message without the ` (os error N)` suffix, so reasons group well.
pub(crate) fn io_reason(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Everything needed to open clients against one server, shared by all of them.
#[derive(Clone, Debug)]
pub(crate) struct Dialer {
    /// Where to connect; the only address the tool ever sends to.
    pub(crate) url: Url,
    /// raw or socketio.
    pub(crate) protocol: Protocol,
    /// PROXY header to send first, if any.
    pub(crate) proxy: Option<ProxyVersion>,
    /// Local addresses to bind before connecting, round robin by client index.
    pub(crate) sources: Option<SourceIps>,
    /// Limit for connect + PROXY + handshake (+ Socket.IO open) together.
    pub(crate) timeout: Duration,
}

/// The sending half of a session.
#[derive(Debug)]
pub(crate) struct Tx {
    inner: WebSocketSender<Stream>,
    protocol: Protocol,
}

/// The receiving half of a session; answers Socket.IO pings through the shared [`Tx`].
#[derive(Debug)]
pub(crate) struct Rx {
    inner: WebSocketReceiver<Stream>,
    protocol: Protocol,
    tx: Arc<Mutex<Tx>>,
}

/// An open session: the sender is shared between a publisher's send loop and the receiver's
/// pongs.
#[derive(Debug)]
pub(crate) struct Client {
    /// Send side.
    pub(crate) tx: Arc<Mutex<Tx>>,
    /// Receive side.
    pub(crate) rx: Rx,
}

/// What the receiver saw next.
#[derive(Debug)]
pub(crate) enum Event {
    /// A chat message's payload.
    Chat(Payload),
    /// Anything else (binary, a Socket.IO `hi` ...): ignored by the scenarios.
    Other,
    /// The session ended; the reason is short and stable for the tally.
    Closed(String),
}

/// A chat payload, borrowed from the frame where possible.
#[derive(Debug)]
pub(crate) enum Payload {
    /// A raw WebSocket text frame.
    Frame(Utf8Bytes),
    /// The string argument of a Socket.IO event (unescaped when needed).
    Owned(String),
}

impl Payload {
    /// The payload text.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Payload::Frame(b) => b.as_str(),
            Payload::Owned(s) => s,
        }
    }
}

impl Dialer {
    /// `"<addr> (<protocol>[, PROXY <v>])"`, for the summaries' first line.
    pub(crate) fn describe(&self) -> String {
        let proxy = self
            .proxy
            .map(|p| format!(", PROXY {p:?}"))
            .unwrap_or_default();
        format!("{} ({:?}{proxy})", self.url.addr, self.protocol)
    }

    /// Opens client number `index` on `target` (path and query), within the dialer's timeout.
    pub(crate) async fn open(&self, index: u64, target: &str) -> Result<Client, OpenError> {
        self.open_inner(index, target)
            .or(async {
                Timer::after(self.timeout).await;
                Err(OpenError::Timeout)
            })
            .await
    }

    /// Connects client `index` (from its `--source-ips` address) and writes its PROXY header
    /// and then `request`.
    pub(crate) async fn dial(&self, index: u64, request: &[u8]) -> Result<Stream, OpenError> {
        let source = self.sources.map(|s| s.nth(index));
        let mut stream = connect(self.url.addr, source).await?;
        let mut out = Vec::with_capacity(256);
        if let Some(version) = self.proxy {
            let SocketAddr::V4(server) = self.url.addr else {
                return Err(OpenError::Io(io::Error::other(
                    "--proxy needs an IPv4 --url",
                )));
            };
            out.extend(proxy_header::build(
                version,
                proxy_header::synthetic_client(index),
                server,
            ));
        }
        out.extend_from_slice(request);
        stream.write_all(&out).await.map_err(OpenError::Io)?;
        Ok(stream)
    }

    async fn open_inner(&self, index: u64, target: &str) -> Result<Client, OpenError> {
        let key = handshake::key(index ^ crate::seed());
        let request = handshake::request(&self.url.host, target, &key);
        let mut stream = self.dial(index, &request).await?;

        let mut buf = Vec::with_capacity(HEAD_READ_CHUNK);
        let head_len = loop {
            let filled = buf.len();
            buf.resize(filled + HEAD_READ_CHUNK, 0);
            let n = stream
                .read(&mut buf[filled..])
                .await
                .map_err(OpenError::Io)?;
            buf.truncate(filled + n);
            if n == 0 {
                return Err(OpenError::Eof);
            }
            if let Some(len) =
                handshake::check_response(&buf, &key).map_err(OpenError::Handshake)?
            {
                break len;
            }
        };
        let leftover = buf.split_off(head_len);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .max_message_size(Some(MAX_MESSAGE))
            .max_frame_size(Some(MAX_MESSAGE));
        let ws = WebSocketStream::from_partially_read(stream, leftover, Role::Client, Some(config))
            .await;
        let (inner, rx) = ws.split();
        let tx = Arc::new(Mutex::new(Tx {
            inner,
            protocol: self.protocol,
        }));
        let mut client = Client {
            rx: Rx {
                inner: rx,
                protocol: self.protocol,
                tx: tx.clone(),
            },
            tx,
        };
        if self.protocol == Protocol::SocketIo {
            client.socketio_connect().await?;
        }
        Ok(client)
    }
}

/// TCP connect to `addr`, first binding to `source` (port 0) when given.
async fn connect(addr: SocketAddr, source: Option<Ipv4Addr>) -> Result<Stream, OpenError> {
    let stream = match source {
        None => Async::<TcpStream>::connect(addr)
            .await
            .map_err(OpenError::Connect)?,
        Some(ip) => {
            use rustix::net::{AddressFamily, SocketFlags, SocketType};
            let family = if addr.is_ipv4() {
                AddressFamily::INET
            } else {
                AddressFamily::INET6
            };
            let fd = rustix::net::socket_with(
                family,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )
            .map_err(|e| OpenError::Connect(e.into()))?;
            rustix::net::bind(&fd, &SocketAddrV4::new(ip, 0))
                .map_err(|e| OpenError::Bind(e.into()))?;
            match rustix::net::connect(&fd, &addr) {
                Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
                Err(e) => return Err(OpenError::Connect(e.into())),
            }
            let stream = Async::new_nonblocking(TcpStream::from(fd)).map_err(OpenError::Connect)?;
            stream.writable().await.map_err(OpenError::Connect)?;
            if let Some(e) = stream.get_ref().take_error().map_err(OpenError::Connect)? {
                return Err(OpenError::Connect(e));
            }
            stream
        }
    };
    // Small messages must leave at once: latency is what we measure.
    stream
        .get_ref()
        .set_nodelay(true)
        .map_err(OpenError::Connect)?;
    Ok(stream)
}

impl Client {
    /// Sends a Socket.IO control packet before the session is up.
    async fn send_during_connect(&self, text: &str) -> Result<(), OpenError> {
        self.tx
            .lock()
            .await
            .send_text(text.into())
            .await
            .map_err(|e| OpenError::SocketIo(e.to_string()))
    }

    /// Engine.IO open, then Socket.IO CONNECT to `/`, answering pings meanwhile.
    async fn socketio_connect(&mut self) -> Result<(), OpenError> {
        let mut opened = false;
        loop {
            let msg = match self.rx.inner.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) | None => {
                    return Err(OpenError::SocketIo("closed while connecting".into()))
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(OpenError::SocketIo(format!("{e}"))),
            };
            match socketio::parse(msg.as_str()) {
                Ok(Packet::Open { .. }) if !opened => {
                    opened = true;
                    self.send_during_connect(socketio::CONNECT).await?;
                }
                Ok(Packet::Connected) if opened => return Ok(()),
                Ok(Packet::Ping) => self.send_during_connect(socketio::PONG).await?,
                Ok(Packet::ConnectError(why)) => {
                    return Err(OpenError::SocketIo(format!("refused {why}")))
                }
                Ok(Packet::Event { .. }) | Ok(Packet::Noop) => {}
                Ok(other) => return Err(OpenError::SocketIo(format!("unexpected {other:?}"))),
                Err(e) => return Err(OpenError::SocketIo(e.to_string())),
            }
        }
    }
}

impl Tx {
    /// Sends one chat message carrying `payload`.
    pub(crate) async fn send_chat(&mut self, payload: &str) -> Result<(), String> {
        let text = match self.protocol {
            Protocol::Raw => payload.to_owned(),
            Protocol::SocketIo | Protocol::SocketIoPolling => socketio::chat_event(payload),
        };
        self.send_text(text).await
    }

    async fn send_text(&mut self, text: String) -> Result<(), String> {
        self.inner
            .send(Message::text(text))
            .await
            .map_err(|e| e.to_string())
    }

    /// Starts the closing handshake with 1000 (normal).
    pub(crate) async fn close(&mut self) -> Result<(), String> {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        self.inner
            .close(Some(frame))
            .await
            .map_err(|e| e.to_string())
    }
}

impl Rx {
    /// The next event of interest; Socket.IO pings are answered here.
    pub(crate) async fn next_event(&mut self) -> Event {
        loop {
            let text = match self.inner.next().await {
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Binary(_))) => return Event::Other,
                Some(Ok(Message::Close(Some(f)))) => {
                    return Event::Closed(format!("close {} {}", u16::from(f.code), f.reason))
                }
                Some(Ok(Message::Close(None))) => return Event::Closed("close".into()),
                Some(Ok(_)) => continue, // ping/pong frames: tungstenite answers pings itself
                Some(Err(e)) => return Event::Closed(e.to_string()),
                None => return Event::Closed("eof".into()),
            };
            if self.protocol == Protocol::Raw {
                return Event::Chat(Payload::Frame(text));
            }
            match socketio::parse(text.as_str()) {
                Ok(Packet::Event {
                    name,
                    arg: Some(arg),
                }) if name == socketio::CHAT_EVENT => {
                    return Event::Chat(Payload::Owned(arg.into_owned()))
                }
                Ok(Packet::Ping) => {
                    if let Err(e) = self.tx.lock().await.send_text(socketio::PONG.into()).await {
                        return Event::Closed(e);
                    }
                }
                Ok(Packet::Close) => return Event::Closed("socketio close".into()),
                Ok(Packet::Disconnected) => return Event::Closed("socketio disconnect".into()),
                Ok(_) => return Event::Other,
                Err(e) => return Event::Closed(e.to_string()),
            }
        }
    }

    /// Reads until the session ends (after our close), for at most `limit`.
    pub(crate) async fn drain_until_closed(&mut self, limit: Duration) -> Result<(), String> {
        async {
            loop {
                if let Event::Closed(_) = self.next_event().await {
                    return Ok(());
                }
            }
        }
        .or(async {
            Timer::after(limit).await;
            Err("close timeout".to_owned())
        })
        .await
    }
}
