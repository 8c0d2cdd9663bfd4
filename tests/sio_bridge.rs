//! Bridging in one room between a plain WebSocket client (`/ws/{room}`) and a stock
//! socket.io-client: plain text arrives as `chat message`, a `chat message` with one string
//! arrives as plain text; what has no form in the other protocol is not delivered.
mod common;
mod sio_common;
use async_tungstenite::tungstenite::Message;
use common::{next_msg, next_text, ws_connect, Gateway, Ws};
use sio_common::{chat_line, url, SioClient};

fn plain(gw: &Gateway, path: &str) -> Ws {
    smol::block_on(ws_connect(gw.addr, path, b""))
}

fn send(ws: &mut Ws, m: Message) {
    smol::block_on(ws.send(m)).expect("send");
}

fn text(ws: &mut Ws) -> String {
    smol::block_on(next_text(ws))
}

#[test]
fn plain_text_reaches_socket_io_as_chat_message() {
    let gw = Gateway::start(&[]);
    let mut sio = SioClient::spawn(&url(gw.addr, ""), r#"{"query":{"room":"lobby"}}"#);
    sio.connected();
    let mut ws = plain(&gw, "/ws/lobby");
    let msg = "héllo \"plain\" \\ ✓ 😀\nline two";
    send(&mut ws, Message::text(msg));
    assert_eq!(text(&mut ws), msg);
    sio.expect(&chat_line(msg));
}

#[test]
fn socket_io_chat_message_reaches_plain_as_text() {
    let gw = Gateway::start(&[]);
    let mut ws = plain(&gw, "/ws");
    let mut sio = SioClient::spawn(&url(gw.addr, ""), "{}");
    sio.connected();
    let msg = "from socket.io: ünïcödé ✓ \"q\" \\ </b>";
    sio.chat(msg);
    sio.expect(&chat_line(msg));
    // The plain client's first message: the newcomer's `hi` has no plain form.
    assert_eq!(text(&mut ws), msg);
    // And back.
    send(&mut ws, Message::text("reply"));
    sio.expect(&chat_line("reply"));
    assert_eq!(text(&mut ws), "reply");
}

#[test]
fn what_has_no_form_in_the_other_protocol_is_not_delivered() {
    let gw = Gateway::start(&[]);
    let mut ws = plain(&gw, "/ws/mix");
    let mut sio = SioClient::spawn(&url(gw.addr, "/?room=mix"), "{}");
    sio.connected();
    // Other events, and `chat message` with other arguments, stay among Socket.IO clients.
    sio.send(r#"{"op":"emit","name":"typing","args":["x"]}"#);
    sio.send(r#"{"op":"emit","name":"chat message","args":["a","b"]}"#);
    sio.send(r#"{"op":"emit","name":"chat message","args":[42]}"#);
    sio.expect(r#"event {"name":"typing","args":["x"]}"#);
    sio.expect(r#"event {"name":"chat message","args":["a","b"]}"#);
    sio.expect(r#"event {"name":"chat message","args":[42]}"#);
    // Plain binary stays among plain clients.
    send(&mut ws, Message::binary(vec![1u8, 2, 3]));
    match smol::block_on(next_msg(&mut ws)) {
        Message::Binary(b) => assert_eq!(&b[..], [1, 2, 3]),
        m => panic!("expected the binary echo, got {m:?}"),
    }
    sio.chat("sentinel");
    sio.expect(&chat_line("sentinel"));
    assert_eq!(text(&mut ws), "sentinel");
}

#[test]
fn bridging_stays_inside_the_room() {
    let gw = Gateway::start(&[]);
    let mut other = plain(&gw, "/ws/other");
    let mut ws = plain(&gw, "/ws/lobby");
    let mut sio = SioClient::spawn(&url(gw.addr, ""), r#"{"query":{"room":"lobby"}}"#);
    sio.connected();
    let mut sio_other = SioClient::spawn(&url(gw.addr, ""), r#"{"query":{"room":"other"}}"#);
    sio_other.connected();
    send(&mut ws, Message::text("lobby plain"));
    assert_eq!(text(&mut ws), "lobby plain");
    sio.expect(&chat_line("lobby plain"));
    sio.chat("lobby sio");
    sio.expect(&chat_line("lobby sio"));
    assert_eq!(text(&mut ws), "lobby sio");
    // The other room's clients saw none of it: their first message is their own room's.
    send(&mut other, Message::text("other plain"));
    assert_eq!(text(&mut other), "other plain");
    sio_other.expect(&chat_line("other plain"));
}
