//! The room's shared order in Redis: the two Lua scripts, their keys, pure.
//!
//! ```text
//! {prefix}:{room}:m   hash    e = the epoch (hex), q = the newest seq, r = the Redis
//!                             primary's replication id when it was numbered
//! {prefix}:{room}:s   stream  one entry per message, id <seq>-0, field d = the envelope
//! {prefix}:{room}:p:<pid>     a Socket.IO session: "<sid> <offset at its join>"
//! ```
//!
//! * Every key of a room has the hash tag `{room}`, so both scripts run on a Redis Cluster.
//! * **PUBLISH** numbers one message (`q + 1`), appends it to the stream (`MAXLEN ~` the
//!   history size), and PUBLISHes `<epoch>-<seq> <envelope>` on the room's channel, in one
//!   step: every instance gets every room's messages in one order, with the same offsets.
//! * A room whose hash is gone (never used, expired, or lost by a Redis restart without
//!   persistence), whose stream is gone while its hash says messages were published, or
//!   whose hash was written by another primary (`r` is not the replication id the instance
//!   read with `INFO replication` when it connected: a failover, whose new primary may lack
//!   the newest writes and would number messages again), starts a new epoch: offsets of the
//!   old one then fail recovery, never replay the wrong messages or skip new ones.
//! * **FOLLOW** gives a room's epoch and newest seq (making the room if it has none) and
//!   the stream's entries from a given id: what an instance needs before it hands out the
//!   room's offsets, and what a resume from before its own log needs.
//! * Both renew the room's keys for `ttl` (twice the recovery window; rooms with members are
//!   renewed every third of a window), so a quiet room keeps its epoch.

/// Numbers, appends and publishes one message. KEYS: hash, stream. ARGV: channel, a new
/// epoch in case the room needs one, the history size, the keys' TTL in ms, the envelope, the
/// primary's replication id.
pub const PUBLISH: &str = "local e = redis.call('HGET', KEYS[1], 'e')
local q = tonumber(redis.call('HGET', KEYS[1], 'q') or '0')
if not e or (q > 0 and redis.call('EXISTS', KEYS[2]) == 0)
    or redis.call('HGET', KEYS[1], 'r') ~= ARGV[6] then
  e = ARGV[2]
  q = 0
  redis.call('DEL', KEYS[2])
end
q = q + 1
redis.call('HSET', KEYS[1], 'e', e, 'q', q, 'r', ARGV[6])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], q .. '-0', 'd', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[1], e .. '-' .. q .. ' ' .. ARGV[5])
return q
";

/// The SHA1 of [`PUBLISH`], checked against `SCRIPT LOAD`'s answer at every connection.
pub const PUBLISH_SHA: &str = "61540bfb445a0cbf192be7be8126fd0a92182131";

/// The room's epoch and newest seq, and stream entries. KEYS: hash, stream. ARGV: a new
/// epoch in case the room needs one, the keys' TTL in ms, the first stream id wanted (`+`
/// for none), the most entries, the primary's replication id.
pub const FOLLOW: &str = "local e = redis.call('HGET', KEYS[1], 'e')
local q = redis.call('HGET', KEYS[1], 'q') or '0'
if not e or (tonumber(q) > 0 and redis.call('EXISTS', KEYS[2]) == 0)
    or redis.call('HGET', KEYS[1], 'r') ~= ARGV[5] then
  e = ARGV[1]
  q = '0'
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'e', e, 'q', 0, 'r', ARGV[5])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return {e, q, redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', ARGV[4])}
";

/// The SHA1 of [`FOLLOW`].
pub const FOLLOW_SHA: &str = "1f32fc95fe056a6d633ed4de51bef2a529b2c29b";

/// A room's key `{prefix}:{room}:{suffix}` as parts, for [`super::resp::bulk`].
pub fn key<'a>(prefix: &'a str, room: &'a str, suffix: &'a str) -> [&'a [u8]; 5] {
    [
        prefix.as_bytes(),
        b":{",
        room.as_bytes(),
        b"}:",
        suffix.as_bytes(),
    ]
}

/// `n` in lowercase hex, without allocating; returns the buffer and the length used.
pub fn hex(n: u64) -> ([u8; 16], usize) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut buf = [0u8; 16];
    let len = (16 - n.leading_zeros() as usize / 4).max(1);
    for i in 0..len {
        buf[len - 1 - i] = DIGITS[(n >> (4 * i) & 15) as usize];
    }
    (buf, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_rooms_hash_tag_and_hex_is_plain() {
        assert_eq!(key("wsgate", "main", "m").concat(), b"wsgate:{main}:m");
        assert_eq!(key("p", "r", "p:abc").concat(), b"p:{r}:p:abc");
        for n in [0u64, 1, 0xa, 0xabc123, u64::MAX] {
            let (b, len) = hex(n);
            assert_eq!(std::str::from_utf8(&b[..len]).unwrap(), format!("{n:x}"));
        }
    }

    #[test]
    fn the_shas_are_the_scripts_own() {
        // `sha1sum` of each script, so an edit that forgets its SHA fails here, before
        // Redis refuses it at connection time.
        for (script, sha) in [(PUBLISH, PUBLISH_SHA), (FOLLOW, FOLLOW_SHA)] {
            let mut child = std::process::Command::new("sha1sum")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("sha1sum (coreutils)");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(sha));
        }
    }
}
