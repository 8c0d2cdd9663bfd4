//! `GET /`: the embedded chat page (the classic app's `index.html`, with a browser
//! WebSocket instead of the Socket.IO bundle). `/healthz` is [`crate::gateway::Health`]'s.

use crate::http::{self, Status};

/// The embedded chat page served at `/`.
pub const PAGE: &[u8] = include_bytes!("page.html");

/// The page's response; with `head`, its head only.
pub(super) fn page(head: bool) -> Vec<u8> {
    http::response(Status::Ok, "text/html; charset=utf-8", "", PAGE, head)
}
