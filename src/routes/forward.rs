//! A request for a polling session that lives on another instance, and the rest of its
//! connection, passed there. Behind a CLB or NLB there is no stickiness that keeps a polling
//! client's requests on one instance; each session's id starts with its owner's tag, and the
//! instances learn each other's `--advertise` addresses on the backplane.
//!
//! ```text
//! client ─> here: head read, sid not here, its tag names a live peer
//!        ─> owner: PROXY v2 (the real client, and the hop TLV) + every byte read so far
//!        <─> then both ways, two fixed buffers, until either side closes
//! ```
//!
//! * The owner serves it as any connection from a trusted proxy, so it logs, limits and
//!   counts the real client. Its answers (and a WebSocket upgrade's frames) come back through.
//! * A forwarded connection carries the hop TLV and is never forwarded again, so a stale peer
//!   table cannot make two instances pass a request back and forth.
//! * Once forwarded, the connection stays forwarded: its later requests go to the same owner.
//! * The owner unreachable within `--redis-timeout`: `502`, `reason=peer_unreachable`, and the
//!   client's next handshake opens a session here.

use crate::gateway::Gateway;
use crate::http::Status;
use crate::info;
use crate::prelude::reject::{self, Reject};
use crate::prelude::{proxy, Buf, Prelude};
use crate::tunnel;
use futures_lite::{AsyncWriteExt, FutureExt};
use smol::{Async, Timer};
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each direction's buffer of a forwarded connection.
const BUFFER_BYTES: usize = 4096;

/// Connects to `to`, passes the request (and what followed it) with a PROXY v2 hop header,
/// and hands both connections to a tunnel task.
pub(super) async fn start(
    mut client: Async<TcpStream>,
    buf: &mut Buf,
    pre: &Prelude,
    gw: &Arc<Gateway>,
    to: SocketAddr,
    sid: &str,
) -> Option<Async<TcpStream>> {
    let timeout = gw
        .config
        .backplane
        .as_ref()
        .map_or(Duration::from_secs(5), |b| b.timeout);
    let destination = client.get_ref().local_addr().unwrap_or(to);
    let mut first = proxy::encode_v2_hop(pre.client, destination);
    first.extend_from_slice(&buf.data[pre.head_start..pre.filled]);
    buf.data = Vec::new();
    let connected = async {
        let mut peer = Async::<TcpStream>::connect(to).await?;
        peer.write_all(&first).await?;
        Ok::<_, io::Error>(peer)
    }
    .or(async {
        Timer::after(timeout).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await;
    let peer = match connected {
        Ok(p) => p,
        Err(e) => {
            let r = Reject::http(Status::BadGateway, "peer_unreachable", format!("{to}: {e}"))
                .with_field("sid", sid);
            reject::answer(&mut client, &gw.metrics, pre, None, r).await;
            return None;
        }
    };
    gw.metrics.peer_forwards.fetch_add(1, Relaxed);
    let (conn, who, sid) = (gw.next_conn(), pre.client, sid.to_owned());
    info!("forward", conn = conn, client = who, sid = sid, to = to);
    let started = Instant::now();
    let edge = gw.edge();
    gw.executor
        .spawn(async move {
            let end = tunnel::pump(edge, client, peer, BUFFER_BYTES, None).await;
            info!(
                "forward_close",
                conn = conn,
                client = who,
                to = to,
                duration = crate::log::Secs(started.elapsed()),
                bytes_up = end.up,
                bytes_down = end.down,
                reason = end.reason
            );
        })
        .detach();
    None
}
