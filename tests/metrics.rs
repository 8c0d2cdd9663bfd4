//! `/metrics` on the admin listener after real traffic: every line parses as the Prometheus text
//! format, the gauges follow what is open, and each counter moves by exactly what the traffic
//! explains. `--log-format json`: every stderr line is one JSON object with ts, level, event.
mod common;
use async_tungstenite::tungstenite::Message;
use common::*;
use futures_lite::StreamExt;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every unlabelled sample the gateway exports, and the labelled families.
const PLAIN: [&str; 11] = [
    "wsgate_connections_open",
    "wsgate_rooms",
    "wsgate_draining",
    "wsgate_connections_accepted_total",
    "wsgate_messages_in_total",
    "wsgate_bytes_in_total",
    "wsgate_messages_out_total",
    "wsgate_bytes_out_total",
    "wsgate_slow_consumer_evictions_total",
    "wsgate_pings_sent_total",
    "wsgate_pong_timeouts_total",
];
const FAMILIES: [&str; 5] = [
    "wsgate_connections_closed_total",
    "wsgate_connections_refused_total",
    "wsgate_proxy_header_errors_total",
    "wsgate_handshake_rejects_total",
    "wsgate_http_errors_total",
];

fn closed(reason: &str) -> String {
    format!("wsgate_connections_closed_total{{reason=\"{reason}\"}}")
}

#[test]
fn gauges_and_traffic_counters_follow_the_traffic() {
    let gw = Gateway::start(&["--admin-listen", "127.0.0.1:0"]);
    let admin = gw.admin_addr();
    let (code, body) = http_get(admin, "/metrics");
    assert_eq!(code, 200);
    for f in FAMILIES {
        assert!(body.contains(&format!("# TYPE {f} counter\n")), "{f}");
    }
    let m0 = scrape(admin);
    for name in PLAIN {
        assert_eq!(m0.0.get(name), Some(&0.0), "{name} present and 0 at start");
    }
    smol::block_on(async {
        let mut a1 = ws_connect(gw.addr, "/ws/a", b"").await;
        let mut a2 = ws_connect(gw.addr, "/ws/a", b"").await;
        let mut a3 = ws_connect(gw.addr, "/ws/a", b"").await;
        let mut b1 = ws_connect(gw.addr, "/ws/b", b"").await;
        let m = scrape(admin);
        assert_eq!(m.get("wsgate_connections_open"), 4.0);
        assert_eq!(m.get("wsgate_rooms"), 2.0);
        assert_eq!(m.get("wsgate_connections_accepted_total"), 4.0);

        // One 5-byte text to a room of 3, one 3-byte binary to a room of 1.
        a1.send(Message::text("hello")).await.unwrap();
        for ws in [&mut a1, &mut a2, &mut a3] {
            assert_eq!(next_text(ws).await, "hello");
        }
        b1.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
        assert_eq!(next_msg(&mut b1).await, Message::binary(vec![1u8, 2, 3]));
        // messages_out is added just after the publish that delivered what we read.
        let m = wait_metric(admin, "wsgate_messages_out_total", 4.0);
        assert_eq!(m.get("wsgate_messages_in_total"), 2.0);
        assert_eq!(m.get("wsgate_bytes_in_total"), 8.0);
        // Frames out: 2-byte header + payload, per member.
        assert_eq!(m.get("wsgate_bytes_out_total"), (3 * 7 + 5) as f64);

        // A Close handshake, then a plain disconnect. (Dropping the closed client ends the
        // server's linger at once, instead of after --close-timeout.)
        let (who1, who2) = (client_of(&a1), client_of(&a2));
        a1.close(None).await.unwrap();
        drop(a1);
        drop(a2);
        gw.wait_log(|l| l.contains(" close ") && l.contains(&who1));
        gw.wait_log(|l| l.contains(" close ") && l.contains(&who2));
        // A session leaves the open gauge just after its close line.
        let m = wait_metric(admin, "wsgate_connections_open", 2.0);
        assert_eq!(m.get(&closed("client_close")), 1.0);
        assert_eq!(m.get(&closed("eof")), 1.0);
        assert_eq!(m.get("wsgate_rooms"), 2.0);
        // The last member leaves room b: one room left.
        let who = client_of(&b1);
        b1.close(None).await.unwrap();
        drop(b1);
        gw.wait_log(|l| l.contains(" close ") && l.contains(&who));
        let m = wait_metric(admin, "wsgate_connections_open", 1.0);
        assert_eq!(m.get("wsgate_rooms"), 1.0);
        assert_eq!(m.get(&closed("client_close")), 2.0);
        drop(a3);
    });
    // Health checks on the main port are accepted connections too; the admin port's are not.
    assert_eq!(http_get(gw.addr, "/healthz").0, 200);
    let m = scrape(admin);
    assert_eq!(m.get("wsgate_connections_accepted_total"), 5.0);
    assert_eq!(m.get("wsgate_slow_consumer_evictions_total"), 0.0);
    assert_eq!(m.get("wsgate_pong_timeouts_total"), 0.0);
}

#[test]
fn refusals_are_counted_by_reason() {
    let gw = Gateway::start(&[
        "--proxy-protocol",
        "optional",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    let upgrade_with = |headers: &str| {
        let req = format!("GET /ws HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        status(&raw(gw.addr, req.as_bytes()))
    };
    let key = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    let up = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    // Handshake rejects, one per check.
    assert_eq!(upgrade_with(""), 426);
    assert_eq!(
        upgrade_with(&format!(
            "Upgrade: websocket\r\nConnection: keep-alive\r\n{key}Sec-WebSocket-Version: 13\r\n"
        )),
        400
    );
    assert_eq!(
        upgrade_with(&format!("{up}{key}Sec-WebSocket-Version: 8\r\n")),
        426
    );
    assert_eq!(
        upgrade_with(&format!("{up}Sec-WebSocket-Version: 13\r\n")),
        400
    );
    assert_eq!(
        upgrade_with(&format!(
            "{up}Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n"
        )),
        400
    );
    // PROXY header errors (a trusted source: 127.0.0.1). No HTTP answer, just a close.
    for bad in [
        &b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n"[..],
        b"PROXY TCP4 1.2.3.999 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n\r\n", // fine, for contrast
    ] {
        raw(gw.addr, bad);
    }
    let mut v2 = proxy_v2(
        "1.2.3.4:1".parse().unwrap(),
        "5.6.7.8:2".parse().unwrap(),
        &[],
    );
    v2[12] = 0x31; // version 3
    assert!(raw(gw.addr, &v2).is_empty());
    // Plain HTTP errors.
    assert_eq!(status(&raw(gw.addr, b"GET /nope HTTP/1.1\r\n\r\n")), 404);
    assert_eq!(status(&raw(gw.addr, b"POST / HTTP/1.1\r\n\r\n")), 405);
    assert_eq!(status(&raw(gw.addr, b"GET / HTTP/1.0\r\n\r\n")), 400);
    assert_eq!(status(&raw(gw.addr, b"GET\x01/ HTTP/1.1\r\n\r\n")), 400);

    let m = scrape(admin);
    let family = |fam: &str| -> BTreeMap<String, f64> {
        m.0.iter()
            .filter_map(|(k, v)| {
                let labels = k.strip_prefix(fam)?.strip_prefix('{')?.strip_suffix('}')?;
                let (_, value) = labels.split_once('=')?;
                Some((value.trim_matches('"').to_string(), *v))
            })
            .collect()
    };
    let expect = |pairs: &[(&str, f64)]| -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };
    assert_eq!(
        family("wsgate_handshake_rejects_total"),
        expect(&[
            ("invalid_key", 1.0),
            ("missing_connection_upgrade", 1.0),
            ("missing_key", 1.0),
            ("not_upgrade", 1.0),
            ("unsupported_version", 1.0),
        ])
    );
    assert_eq!(
        family("wsgate_proxy_header_errors_total"),
        expect(&[
            ("v1_bad_address", 1.0),
            ("v1_bad_family", 1.0),
            ("v2_bad_version", 1.0)
        ])
    );
    assert_eq!(
        family("wsgate_http_errors_total"),
        expect(&[
            ("http_version", 1.0),
            ("malformed_request", 1.0),
            ("method_not_allowed", 1.0),
            ("not_found", 1.0),
        ])
    );
    assert!(family("wsgate_connections_refused_total").is_empty());
    assert_eq!(m.get("wsgate_connections_open"), 0.0);
    // Each refusal was logged once with the client's address.
    gw.wait_events("handshake_rejected", 5);
    gw.wait_events("prelude_rejected", 5);
    gw.wait_events("http_error", 2);
    let warned: Vec<_> = gw
        .logs()
        .into_iter()
        .filter(|l| l.contains(" WARN "))
        .collect();
    assert_eq!(warned.len(), 12, "{warned:#?}");
    assert!(warned.iter().all(|l| l.contains("client=127.0.0.1:")));
}

#[test]
fn pings_and_pong_timeouts_are_counted() {
    let gw = Gateway::start(&[
        "--ping-interval",
        "100ms",
        "--pong-timeout",
        "300ms",
        "--close-timeout",
        "100ms",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    // Upgraded, then silent: it never answers a ping.
    let _mute = smol::block_on(async { upgrade(gw.addr, b"", "/ws", "").await.2 });
    gw.wait_log(|l| l.contains(" close ") && l.contains("reason=pong_timeout"));
    let m = wait_metric(admin, "wsgate_connections_open", 0.0);
    assert!(m.get("wsgate_pings_sent_total") >= 1.0);
    assert_eq!(m.get("wsgate_pong_timeouts_total"), 1.0);
    assert_eq!(m.get(&closed("pong_timeout")), 1.0);
}

#[test]
fn slow_consumer_evictions_are_counted() {
    // A short --close-timeout: the close line comes after the evicted client's linger.
    let gw = Gateway::start(&[
        "--outbox-frames",
        "4",
        "--close-timeout",
        "100ms",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    let admin = gw.admin_addr();
    smol::block_on(async {
        // Upgraded, then never reads: its socket buffers fill, then its 4-frame outbox.
        let _slow = upgrade(gw.addr, b"", "/ws/s", "").await.2;
        let publisher = ws_connect(gw.addr, "/ws/s", b"").await;
        let (mut tx, mut rx) = publisher.split();
        // The publisher gets its own messages back: it waits for each before sending the
        // next, so that its own 4-frame outbox never fills however slowly this machine runs
        // it; only the silent client's does.
        let mut echo = async || match rx.next().await {
            Some(Ok(m)) => m,
            other => panic!("the publisher's stream ended: {other:?}"),
        };
        let payload = "x".repeat(60_000);
        let mut sent = 0;
        while gw.events("close").is_empty() {
            assert!(sent < 5_000, "no eviction after {sent} messages of 60 kB");
            tx.send(Message::text(payload.clone())).await.unwrap();
            sent += 1;
            assert_eq!(echo().await, Message::text(payload.clone()));
        }
        let line = gw.wait_log(|l| l.contains(" close "));
        assert!(line.contains("reason=slow_consumer"), "{line}");
        // Once the publisher's last message is back, the server has counted everything.
        tx.send(Message::text("last")).await.unwrap();
        sent += 1;
        assert_eq!(echo().await, Message::text("last"));
        // The publisher counts the eviction just after its publish.
        let m = wait_metric(admin, "wsgate_slow_consumer_evictions_total", 1.0);
        assert_eq!(m.get(&closed("slow_consumer")), 1.0);
        wait_metric(admin, "wsgate_connections_open", 1.0);
        assert_eq!(m.get("wsgate_messages_in_total"), sent as f64);
    });
}

#[test]
fn json_log_lines_are_json_objects_with_ts_level_event() {
    let mut gw = Gateway::start(&[
        "--log-format",
        "json",
        "--log-messages",
        "--allowed-origins",
        "https://ok.example",
    ]);
    // Text that needs escaping on its way into a JSON string.
    let tricky = "quote \" backslash \\ newline \n tab \t bell \u{7} unicode \u{e9}\u{1F600}";
    smol::block_on(async {
        let mut ws = ws_connect(gw.addr, "/ws", b"").await;
        ws.send(Message::text(tricky)).await.unwrap();
        assert_eq!(next_text(&mut ws).await, tricky);
        let (code, _, _) = upgrade(gw.addr, b"", "/ws", "Origin: \"evil\\\"\r\n").await;
        assert_eq!(code, 403);
        ws.close(None).await.unwrap();
    });
    assert_eq!(status(&raw(gw.addr, b"GET /nope HTTP/1.1\r\n\r\n")), 404);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(20)), Some(0));
    // `stopped` is the last line; once it is read, so are all before it.
    gw.wait_log(|l| l.contains(r#""event":"stopped""#));

    let logs = gw.logs();
    let mut events = Vec::new();
    for line in &logs {
        let obj = match json::parse(line) {
            Ok(json::Value::Object(o)) => o,
            other => panic!("not a JSON object ({other:?}): {line}"),
        };
        let s = |k: &str| match obj.get(k) {
            Some(json::Value::String(s)) => s.clone(),
            v => panic!("{k}: {v:?} in {line}"),
        };
        let ts = s("ts");
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{line}"
        );
        assert!(
            ["info", "warn", "error"].contains(&s("level").as_str()),
            "{line}"
        );
        events.push((s("event"), obj));
    }
    let names: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    for e in [
        "listening",
        "open",
        "message",
        "upgrade_refused",
        "close",
        "http_error",
        "draining",
        "stopped",
    ] {
        assert!(names.contains(&e), "no {e} event in {names:?}");
    }
    // The message text survives the round trip exactly.
    let (_, msg) = events.iter().find(|(e, _)| e == "message").unwrap();
    assert_eq!(msg.get("text"), Some(&json::Value::String(tricky.into())));
    let (_, refused) = events.iter().find(|(e, _)| e == "upgrade_refused").unwrap();
    assert_eq!(
        refused.get("origin"),
        Some(&json::Value::String("\"evil\\\"".into()))
    );
}

/// A small strict JSON parser (RFC 8259), enough to check the log lines without a dependency.
mod json {
    use std::collections::BTreeMap;

    #[derive(Debug, Clone, PartialEq)]
    pub enum Value {
        Null,
        Bool(bool),
        Number(f64),
        String(String),
        Array(Vec<Value>),
        Object(BTreeMap<String, Value>),
    }

    /// Parses exactly one value with nothing but whitespace around it.
    pub fn parse(s: &str) -> Result<Value, String> {
        let mut p = Parser {
            b: s.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing bytes at {}", p.i));
        }
        Ok(v)
    }

    struct Parser<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl Parser<'_> {
        fn ws(&mut self) {
            while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> Result<(), String> {
            self.ws();
            if self.b.get(self.i) == Some(&c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", c as char, self.i))
            }
        }
        fn value(&mut self) -> Result<Value, String> {
            self.ws();
            match self.b.get(self.i) {
                Some(b'{') => {
                    self.i += 1;
                    let mut m = BTreeMap::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(Value::Object(m));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.eat(b':')?;
                        let v = self.value()?;
                        if m.insert(k.clone(), v).is_some() {
                            return Err(format!("duplicate key {k:?}"));
                        }
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(Value::Object(m));
                            }
                            _ => return Err(format!("bad object at {}", self.i)),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(Value::Array(a));
                    }
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(Value::Array(a));
                            }
                            _ => return Err(format!("bad array at {}", self.i)),
                        }
                    }
                }
                Some(b'"') => self.string().map(Value::String),
                Some(b't') => self.word("true", Value::Bool(true)),
                Some(b'f') => self.word("false", Value::Bool(false)),
                Some(b'n') => self.word("null", Value::Null),
                Some(b'-' | b'0'..=b'9') => {
                    let start = self.i;
                    while matches!(
                        self.b.get(self.i),
                        Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                    ) {
                        self.i += 1;
                    }
                    let t = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                    t.parse()
                        .map(Value::Number)
                        .map_err(|_| format!("number {t}"))
                }
                _ => Err(format!("unexpected byte at {}", self.i)),
            }
        }
        fn word(&mut self, w: &str, v: Value) -> Result<Value, String> {
            if self.b[self.i..].starts_with(w.as_bytes()) {
                self.i += w.len();
                Ok(v)
            } else {
                Err(format!("bad literal at {}", self.i))
            }
        }
        fn hex4(&mut self) -> Result<u32, String> {
            let h = self.b.get(self.i..self.i + 4).ok_or("short \\u")?;
            self.i += 4;
            u32::from_str_radix(std::str::from_utf8(h).map_err(|e| e.to_string())?, 16)
                .map_err(|e| e.to_string())
        }
        fn string(&mut self) -> Result<String, String> {
            if self.b.get(self.i) != Some(&b'"') {
                return Err(format!("expected string at {}", self.i));
            }
            self.i += 1;
            let mut out = Vec::new();
            loop {
                let c = *self.b.get(self.i).ok_or("unterminated string")?;
                self.i += 1;
                match c {
                    b'"' => return String::from_utf8(out).map_err(|e| e.to_string()),
                    b'\\' => {
                        let e = *self.b.get(self.i).ok_or("short escape")?;
                        self.i += 1;
                        let ch = match e {
                            b'"' => '"',
                            b'\\' => '\\',
                            b'/' => '/',
                            b'b' => '\u{8}',
                            b'f' => '\u{c}',
                            b'n' => '\n',
                            b'r' => '\r',
                            b't' => '\t',
                            b'u' => {
                                let mut u = self.hex4()?;
                                if (0xD800..0xDC00).contains(&u) {
                                    if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                        return Err("lone surrogate".into());
                                    }
                                    self.i += 2;
                                    let lo = self.hex4()?;
                                    u = 0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00);
                                }
                                char::from_u32(u).ok_or("bad \\u")?
                            }
                            _ => return Err(format!("bad escape at {}", self.i)),
                        };
                        out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                    }
                    0..=0x1F => return Err(format!("raw control byte at {}", self.i - 1)),
                    c => out.push(c),
                }
            }
        }
    }

    #[test]
    fn parser_accepts_json_and_rejects_the_rest() {
        assert!(parse(r#"{"a":[1,-2.5e3,true,null,"\u00e9\ud83d\ude00\n"],"b":{}}"#).is_ok());
        for bad in [
            r#"{"a":1,}"#,
            "{\"a\":\"\u{1}\"}",
            r#"{"a":"\x"}"#,
            "{} x",
            r#"{'a':1}"#,
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
