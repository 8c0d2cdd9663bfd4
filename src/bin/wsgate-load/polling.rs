//! `--protocol socketio-polling` (`idle` only): a Socket.IO client on Engine.IO's HTTP
//! long-polling transport, on one kept-alive HTTP/1.1 connection, as a browser polls:
//!
//! ```text
//! GET  ?EIO=4&transport=polling        <- 0{"sid":..}      (after the PROXY header, if any)
//! POST ..&sid=SID  40                  <- ok
//! GET  ..&sid=SID  (held by the server) <- 40{..} | 2 (ping: POST 3) | 1 (closed) | ...
//! ```
//! What a held session costs the server is what `idle` measures.

use crate::client::{io_reason, Dialer, OpenError, Stream};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::Timer;
use std::io;

/// Largest response head or body accepted.
const MAX_RESPONSE: usize = 1 << 20;

/// One polling session.
#[derive(Debug)]
pub(crate) struct PollClient {
    stream: Stream,
    host: String,
    /// The request target with `&sid=..`.
    target: String,
    /// Bytes read past the last response.
    buf: Vec<u8>,
}

impl Dialer {
    /// Opens a polling session: handshake, connect to `/`, and its `40` answer.
    pub(crate) async fn open_polling(
        &self,
        index: u64,
        target: &str,
    ) -> Result<PollClient, OpenError> {
        let open = async {
            let first = request(&self.url.host, "GET", target, b"");
            let stream = self.dial(index, &first).await?;
            let mut c = PollClient {
                stream,
                host: self.url.host.clone(),
                target: String::new(),
                buf: Vec::new(),
            };
            let (status, body) = c.read_response().await.map_err(OpenError::Io)?;
            let body = String::from_utf8_lossy(&body).into_owned();
            let sid = body
                .strip_prefix("0{\"sid\":\"")
                .and_then(|r| r.split('"').next())
                .filter(|_| status == 200)
                .ok_or_else(|| OpenError::SocketIo(format!("handshake {status}: {body:.80}")))?;
            c.target = format!("{target}&sid={sid}");
            c.post("40").await.map_err(OpenError::SocketIo)?;
            let first = c.poll().await.map_err(OpenError::SocketIo)?;
            if !first.starts_with("40") {
                return Err(OpenError::SocketIo(format!(
                    "no connect answer: {first:.80}"
                )));
            }
            Ok(c)
        };
        open.or(async {
            Timer::after(self.timeout).await;
            Err(OpenError::Timeout)
        })
        .await
    }
}

impl PollClient {
    /// Polls until the session ends, answering pings; returns why it ended.
    pub(crate) async fn held_until_closed(&mut self) -> String {
        loop {
            let payload = match self.poll().await {
                Ok(p) => p,
                Err(e) => return e,
            };
            for packet in payload.split('\x1e') {
                match packet.as_bytes().first() {
                    Some(b'2') => {
                        if let Err(e) = self.post("3").await {
                            return e;
                        }
                    }
                    Some(b'1') => return "server closed the session".into(),
                    _ => {}
                }
            }
        }
    }

    /// Ends the session (Engine.IO close, `1`).
    pub(crate) async fn close(&mut self) {
        let _ = self.post("1").await;
    }

    /// One GET: the payload the server answers it with.
    async fn poll(&mut self) -> Result<String, String> {
        let req = request(&self.host, "GET", &self.target, b"");
        self.exchange(&req).await
    }

    async fn post(&mut self, body: &str) -> Result<(), String> {
        let req = request(&self.host, "POST", &self.target, body.as_bytes());
        match self.exchange(&req).await? {
            ok if ok == "ok" => Ok(()),
            other => Err(format!("POST answered {other:.80}")),
        }
    }

    async fn exchange(&mut self, req: &[u8]) -> Result<String, String> {
        self.stream
            .write_all(req)
            .await
            .map_err(|e| format!("io: {}", io_reason(&e)))?;
        let (status, body) = self
            .read_response()
            .await
            .map_err(|e| format!("io: {}", io_reason(&e)))?;
        let body = String::from_utf8_lossy(&body).into_owned();
        if status != 200 {
            return Err(format!("status {status}: {body:.80}"));
        }
        Ok(body)
    }

    /// Reads one response framed by its Content-Length.
    async fn read_response(&mut self) -> io::Result<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other("bad status line"))?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        if len > MAX_RESPONSE {
            return Err(io::Error::other("response too large"));
        }
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        let body = self.buf[head_end..head_end + len].to_vec();
        self.buf.drain(..head_end + len);
        Ok((status, body))
    }

    async fn fill(&mut self) -> io::Result<()> {
        if self.buf.len() > MAX_RESPONSE {
            return Err(io::Error::other("response too large"));
        }
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// One HTTP/1.1 request.
fn request(host: &str, method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
    if method == "POST" {
        r.extend_from_slice(
            format!(
                "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        assert_eq!(
            request("h", "GET", "/socket.io/?EIO=4&transport=polling", b""),
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: h\r\n\r\n"
        );
        let post = request("h", "POST", "/x", b"40");
        assert!(post.ends_with(b"Content-Length: 2\r\n\r\n40"));
    }
}
