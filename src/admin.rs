//! The operators' listener (`--admin-listen`): `/metrics` in the Prometheus text format and
//! `/healthz`. No PROXY protocol and no WebSocket here; bind it to loopback or a private
//! address that the load balancer does not forward to.

use crate::error;
use crate::gateway::Gateway;
use crate::prelude::health_response;
use crate::prelude::http::{self, Head, Status};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use smol::{Async, Timer};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// Largest admin request head.
const MAX_HEAD: usize = 4096;

/// Serves the admin listener forever.
pub async fn run(listener: Async<TcpListener>, gw: Arc<Gateway>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let gw2 = gw.clone();
                gw.executor.spawn(serve(stream, gw2)).detach();
            }
            Err(e) => {
                error!("admin_accept_failed", reason = e);
                Timer::after(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn serve(mut stream: Async<TcpStream>, gw: Arc<Gateway>) {
    let timeout = gw.config.prelude.header_timeout;
    let mut buf = [0u8; MAX_HEAD];
    let mut filled = 0;
    let head = async {
        loop {
            match http::parse_head(&buf[..filled]) {
                Ok(Head::Complete { request, .. }) => {
                    return Some(answer(&gw, request.method, request.target))
                }
                Ok(Head::Partial) if filled < buf.len() => {}
                Ok(Head::Partial) => {
                    return Some(http::error_response(
                        Status::HeaderTooLarge,
                        "",
                        &"head too large",
                    ))
                }
                Err(e) => return Some(http::error_response(e.status(), "", &e)),
            }
            match stream.read(&mut buf[filled..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => filled += n,
            }
        }
    };
    let resp = head
        .or(async {
            Timer::after(timeout).await;
            None
        })
        .await;
    if let Some(r) = resp {
        let _ = stream.write_all(&r).await;
    }
}

/// The response for an admin request.
pub fn answer(gw: &Gateway, method: &str, target: &str) -> Vec<u8> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if method != "GET" && method != "HEAD" {
        return http::error_response(Status::MethodNotAllowed, "Allow: GET, HEAD\r\n", &method);
    }
    let head = method == "HEAD";
    match path {
        "/metrics" => {
            let polling = gw.sessions.polling.len();
            let mut body = gw.metrics.render(gw.hub.rooms(), polling, gw.is_draining());
            if let Some(bp) = &gw.backplane {
                bp.render_metrics(&mut body);
            }
            http::response(
                Status::Ok,
                "text/plain; version=0.0.4; charset=utf-8",
                "",
                body.as_bytes(),
                head,
            )
        }
        "/healthz" => health_response(gw.health(), head),
        _ => http::error_response(Status::NotFound, "", &"try /metrics or /healthz"),
    }
}
