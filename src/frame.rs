//! Server-to-client WebSocket frames, encoded once per publish and shared by every member.
//!
//! Server frames carry no mask (RFC 6455 section 5.1), so the same bytes are valid on every
//! connection: a publish makes one `Arc<[u8]>` (a single allocation) and each delivery is a
//! reference-count increment.

use std::sync::Arc;

/// Data frame kinds a client may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Opcode 0x1: UTF-8 text.
    Text,
    /// Opcode 0x2: binary.
    Binary,
}

impl Kind {
    fn opcode(self) -> u8 {
        match self {
            Kind::Text => 0x1,
            Kind::Binary => 0x2,
        }
    }
}

/// An encoded, immutable frame, shared between outboxes.
pub type Frame = Arc<[u8]>;

/// Length of the header for a payload of `len` bytes (no mask).
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    }
}

/// Encodes one final (FIN) unmasked frame: header and payload in one allocation.
pub fn encode(kind: Kind, payload: &[u8]) -> Frame {
    encode_with(kind, payload.len(), |out| out.copy_from_slice(payload))
}

/// Encodes one final unmasked frame of `len` payload bytes written by `fill` (which must
/// fill its whole slice), so that a caller can build the payload in place.
pub fn encode_with(kind: Kind, len: usize, fill: impl FnOnce(&mut [u8])) -> Frame {
    let hl = header_len(len);
    // `repeat_n` has an exact length, so this is one allocation of the final size.
    let mut frame: Frame = std::iter::repeat_n(0u8, hl + len).collect();
    let bytes = Arc::get_mut(&mut frame).expect("a fresh Arc is unique");
    bytes[0] = 0x80 | kind.opcode();
    match hl {
        2 => bytes[1] = len as u8,
        4 => {
            bytes[1] = 126;
            bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            bytes[1] = 127;
            bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        }
    }
    fill(&mut bytes[hl..]);
    frame
}

/// The payload of a frame made by [`encode`]: what follows its header. (An Engine.IO polling
/// response carries the same packets as the WebSocket transport, without the framing.)
pub fn payload(frame: &[u8]) -> &[u8] {
    let hl = match frame.get(1).map(|b| b & 0x7f) {
        None => return &[],
        Some(0..=125) => 2,
        Some(126) => 4,
        Some(_) => 10,
    };
    frame.get(hl..).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_text() {
        assert_eq!(&encode(Kind::Text, b"hi")[..], b"\x81\x02hi");
        assert_eq!(&encode(Kind::Binary, b"")[..], b"\x82\x00");
    }

    #[test]
    fn lengths() {
        let p = vec![7u8; 125];
        assert_eq!(&encode(Kind::Text, &p)[..2], b"\x81\x7d");
        let p = vec![7u8; 126];
        let f = encode(Kind::Binary, &p);
        assert_eq!(&f[..4], b"\x82\x7e\x00\x7e");
        assert_eq!(f.len(), 130);
        let p = vec![7u8; 70_000];
        let f = encode(Kind::Binary, &p);
        assert_eq!(&f[..10], b"\x82\x7f\x00\x00\x00\x00\x00\x01\x11\x70");
        assert_eq!(f.len(), 70_010);
        assert!(f[10..].iter().all(|b| *b == 7));
    }

    #[test]
    fn payload_is_what_follows_the_header() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let p: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert_eq!(payload(&encode(Kind::Text, &p)), &p[..], "{len}");
        }
        assert_eq!(payload(b""), b"");
        assert_eq!(payload(b"\x81"), b"");
    }
}
