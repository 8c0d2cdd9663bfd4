//! Differential test: `wsgate::prelude::proxy::decode` against the `ppp` crate 2.3 over hundreds of
//! thousands of inputs: generated valid v1/v2 headers, their strict prefixes, and mutations
//! of them (bytes changed, inserted, deleted, fields swapped, truncated, extended). A
//! fixed-seed xorshift PRNG keeps every run the same. A counting allocator also shows that
//! `decode` never touches the heap.
//!
//! The two must agree on accept/reject, addresses and bytes consumed. `ppp` has no "read
//! more" answer for v1 and checks v2 only from 16 bytes on, so where `ppp` cannot decide
//! yet, our answer is checked against `ppp`'s verdict on a completion of the input instead
//! (see `check_v1` and `check_v2`); our Partial against `ppp`'s "incomplete" is agreement.
//!
//! Known differences, where the spec (HAProxy proxy-protocol.txt) and `ppp` disagree and the
//! decoder follows the spec. Each class is recognised from the input, excluded from the
//! comparison, asserted against the spec instead, and counted:
//! - `v1_plus_port`: a v1 port written with a sign, `+80`. `ppp` takes it (`u16::from_str`
//!   accepts a leading `+`); the spec says "a decimal integer", we refuse (`V1BadPort`).
//! - `v1_unknown_rest`: a v1 `UNKNOWN` line whose ignored rest holds more than 4 spaces or
//!   is not UTF-8. `ppp` refuses it (`splitn(7)` leaves the CRLF inside the last piece;
//!   `from_utf8`); the spec says "the receiver must ignore anything presented before the
//!   CRLF", so we accept it with unspecified addresses.
//! - `v2_half_unspec_family`: v2 PROXY with family/protocol byte 0x01, 0x02, 0x10, 0x20 or
//!   0x30. `ppp` checks the two nibbles separately and takes them; the spec lists only the
//!   seven bytes 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32, so we refuse (`V2BadFamily`).
//! - `v2_local_family`: v2 LOCAL whose family byte `ppp` refuses, or whose length is shorter
//!   than that family's address block. The spec says LOCAL discards "the protocol block
//!   including the family which is ignored", so we accept and skip `len` bytes.
//!
//! Not an exclusion but a representation difference: for v2 LOCAL `ppp` returns the parsed
//! address block, we return `Addresses::Unspecified` (the spec says to use the real
//! endpoints); for LOCAL only acceptance, bytes consumed and the empty TLV area are compared.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use wsgate::prelude::proxy::{
    decode, Addresses, Command, Decoded, ProxyError, V1_MAX_LEN, V1_SIGNATURE, V2_FIXED_LEN,
    V2_SIGNATURE,
};

/// Valid v1 headers generated per seed.
const V1_HEADERS: usize = 1_500;
/// Valid v2 headers generated per seed.
const V2_HEADERS: usize = 1_500;
/// Mutants derived from each valid header.
const MUTANTS_PER_HEADER: usize = 6;
/// Random, mostly non-PROXY, buffers per seed.
const RANDOM_BUFFERS: usize = 1_000;
/// The fixed seeds; each one runs the whole generation.
const SEEDS: [u64; 2] = [0x9E37_79B9_7F4A_7C15, 0x2545_F491_4F6C_DD1D];

mod counting_alloc;

/// Counts heap allocations, to show `decode` makes none.
#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

/// `decode`, asserting it did not touch the heap.
fn decode_no_alloc(input: &[u8]) -> Result<Decoded<'_>, ProxyError> {
    let before = counting_alloc::this_thread();
    let result = decode(input);
    let after = counting_alloc::this_thread();
    assert_eq!(before, after, "decode allocated on {input:?}");
    result
}

/// xorshift64*: small, fast, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
    fn u16(&mut self) -> u16 {
        self.next() as u16
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}

/// Addresses in a form both parsers map to.
#[derive(Debug, Clone, PartialEq)]
enum Addr {
    Unspecified,
    Inet(SocketAddr, SocketAddr),
    Unix(Vec<u8>, Vec<u8>),
}

fn ours_addr(addresses: Addresses<'_>) -> Addr {
    match addresses {
        Addresses::Unspecified => Addr::Unspecified,
        Addresses::Inet {
            source,
            destination,
        } => Addr::Inet(source, destination),
        Addresses::Unix {
            source,
            destination,
        } => Addr::Unix(source.to_vec(), destination.to_vec()),
    }
}

/// `ppp`'s v1 verdict: bytes consumed and addresses, or refused.
fn ppp_v1(input: &[u8]) -> Option<(usize, Addr)> {
    let header = ppp::v1::Header::try_from(input).ok()?;
    let addr = match header.addresses {
        ppp::v1::Addresses::Tcp4(a) => Addr::Inet(
            SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
            SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
        ),
        ppp::v1::Addresses::Tcp6(a) => Addr::Inet(
            SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
            SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
        ),
        ppp::v1::Addresses::Unknown => Addr::Unspecified,
    };
    Some((header.header.len(), addr))
}

/// `ppp`'s v2 verdict.
#[derive(Debug)]
enum PppV2 {
    Accepted {
        consumed: usize,
        local: bool,
        addr: Addr,
        tlv_bytes: Vec<u8>,
        tlvs: Vec<(u8, Vec<u8>)>,
    },
    /// Fewer than 16 bytes (`Incomplete`).
    Incomplete,
    /// The fixed part is valid but the announced block is not all in (`Partial`).
    Partial,
    Refused,
}

fn ppp_v2(input: &[u8]) -> PppV2 {
    use ppp::v2::{Addresses as A, Command as C, Header, ParseError as E};
    match Header::try_from(input) {
        Ok(h) => PppV2::Accepted {
            consumed: h.len(),
            local: h.command == C::Local,
            addr: match h.addresses {
                A::Unspecified => Addr::Unspecified,
                A::IPv4(a) => Addr::Inet(
                    SocketAddr::new(IpAddr::V4(a.source_address), a.source_port),
                    SocketAddr::new(IpAddr::V4(a.destination_address), a.destination_port),
                ),
                A::IPv6(a) => Addr::Inet(
                    SocketAddr::new(IpAddr::V6(a.source_address), a.source_port),
                    SocketAddr::new(IpAddr::V6(a.destination_address), a.destination_port),
                ),
                A::Unix(u) => Addr::Unix(u.source.to_vec(), u.destination.to_vec()),
            },
            tlv_bytes: h.tlv_bytes().to_vec(),
            tlvs: h
                .tlvs()
                .map_while(Result::ok)
                .map(|t| (t.kind, t.value.to_vec()))
                .collect(),
        },
        Err(E::Incomplete(_)) => PppV2::Incomplete,
        Err(E::Partial(..)) => PppV2::Partial,
        Err(_) => PppV2::Refused,
    }
}

/// Counts what was compared and what was excluded, by class.
#[derive(Default)]
struct Stats(BTreeMap<&'static str, usize>, usize);

impl Stats {
    fn add(&mut self, what: &'static str) {
        *self.0.entry(what).or_default() += 1;
    }
    fn get(&self, what: &str) -> usize {
        self.0.get(what).copied().unwrap_or(0)
    }
    /// Inputs checked (each lands in exactly one class above, plus sub-checks).
    fn inputs(&self) -> usize {
        self.1
    }
}

fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

/// Decodes `input` with both parsers and asserts they agree (or the input is in a known
/// class, asserted against the spec).
fn check(input: &[u8], stats: &mut Stats) {
    stats.1 += 1;
    let ours = decode_no_alloc(input);
    if let Ok(Decoded::Complete { consumed, header }) = ours {
        assert!(consumed > 0 && consumed <= input.len(), "{input:?}");
        // The header alone decodes the same: trailing bytes never matter.
        assert_eq!(decode(&input[..consumed]), ours, "{input:?}");
        let _ = header.tlvs().count();
        let _ = header.aws_vpce_id();
    }
    if input.len() < V1_SIGNATURE.len() && starts_like(input, V1_SIGNATURE)
        || input.len() < V2_SIGNATURE.len() && starts_like(input, &V2_SIGNATURE)
    {
        assert_eq!(ours, Ok(Decoded::Partial), "signature prefix {input:?}");
        stats.add("signature_prefix_partial");
    } else if input.starts_with(V1_SIGNATURE) {
        check_v1(input, ours, stats);
    } else if input.starts_with(&V2_SIGNATURE) {
        check_v2(input, ours, stats);
    } else {
        assert_eq!(ours, Err(ProxyError::NotProxy), "{input:?}");
        assert!(
            ppp_v1(input).is_none(),
            "ppp v1 took a non-PROXY buffer {input:?}"
        );
        assert!(
            matches!(ppp_v2(input), PppV2::Refused),
            "ppp v2 did not refuse {input:?}"
        );
        stats.add("not_proxy_agree");
    }
}

/// The v1 line up to its first CR, when a LF follows that CR.
fn v1_line(input: &[u8]) -> Option<&[u8]> {
    let cr = input.iter().position(|&b| b == b'\r')?;
    (input.get(cr + 1) == Some(&b'\n')).then(|| &input[..cr])
}

/// Whether `input` is in the `v1_unknown_rest` class (see the module docs).
fn is_v1_unknown_rest(input: &[u8]) -> bool {
    let Some(line) = v1_line(input) else {
        return false;
    };
    if line.len() + 2 > V1_MAX_LEN {
        return false;
    }
    let Some(rest) = line.strip_prefix(b"PROXY UNKNOWN") else {
        return false;
    };
    if !rest.is_empty() && rest[0] != b' ' {
        return false;
    }
    let spaces = rest.iter().filter(|&&b| b == b' ').count();
    spaces > 4 || std::str::from_utf8(&input[..line.len() + 2]).is_err()
}

/// Whether `ppp` accepted `input` only because a port has a `+` sign (`v1_plus_port`).
fn is_v1_plus_port(input: &[u8]) -> bool {
    let Some(line) = v1_line(input) else {
        return false;
    };
    let fields: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
    fields.len() == 6
        && (fields[1] == b"TCP4" || fields[1] == b"TCP6")
        && fields[4..].iter().any(|p| p.first() == Some(&b'+'))
        && ppp_v1(input).is_some()
}

fn check_v1(input: &[u8], ours: Result<Decoded<'_>, ProxyError>, stats: &mut Stats) {
    let cr = input.iter().position(|&b| b == b'\r');
    // ppp decides once a byte follows the first CR, or at 107 bytes.
    let decided = matches!(cr, Some(at) if at + 1 < input.len()) || input.len() >= V1_MAX_LEN;
    if decided {
        if is_v1_plus_port(input) {
            assert_eq!(ours, Err(ProxyError::V1BadPort), "{input:?}");
            stats.add("excluded_v1_plus_port");
            return;
        }
        if is_v1_unknown_rest(input) {
            let line = v1_line(input).unwrap();
            match ours {
                Ok(Decoded::Complete { consumed, header }) => {
                    assert_eq!(consumed, line.len() + 2);
                    assert_eq!(header.addresses, Addresses::Unspecified);
                }
                other => panic!("UNKNOWN line must be accepted: {other:?} {input:?}"),
            }
            stats.add("excluded_v1_unknown_rest");
            return;
        }
        match (ours, ppp_v1(input)) {
            (Ok(Decoded::Complete { consumed, header }), Some((ppp_consumed, ppp_addr))) => {
                assert_eq!(consumed, ppp_consumed, "consumed {input:?}");
                assert_eq!(ours_addr(header.addresses), ppp_addr, "addresses {input:?}");
                assert_eq!(header.command, Command::Proxy);
                stats.add("v1_both_accept");
            }
            (Err(_), None) => stats.add("v1_both_refuse"),
            (ours, theirs) => {
                panic!("v1 disagreement on {input:?}:\n ours {ours:?}\n ppp  {theirs:?}")
            }
        }
    } else {
        // ppp cannot say "read more" for v1, so judge our answer by ppp's verdict on the
        // input completed with its CRLF.
        assert!(
            !matches!(ours, Ok(Decoded::Complete { .. })),
            "complete without CRLF {input:?}"
        );
        let mut completion = input.to_vec();
        if !completion.ends_with(b"\r") {
            completion.push(b'\r');
        }
        completion.push(b'\n');
        match ours {
            Err(e) => {
                if ppp_v1(&completion).is_some() {
                    assert!(
                        is_v1_plus_port(&completion) && e == ProxyError::V1BadPort,
                        "we refused a prefix early ({e:?}) but ppp accepts {completion:?}"
                    );
                    stats.add("excluded_v1_plus_port");
                } else {
                    stats.add("v1_early_refuse_confirmed");
                }
            }
            Ok(_) => {
                stats.add("v1_partial_vs_ppp_undecided");
                // Sampled, as the search is slow: our Partial must be honest.
                if input.len() % 10 == 0 {
                    let completion = v1_completion(input)
                        .unwrap_or_else(|| panic!("Partial but no completion: {input:?}"));
                    check(&completion, stats);
                    stats.add("v1_partial_completion_found");
                }
            }
        }
    }
}

/// Searches a completion of the v1 prefix `p` (which we called Partial) that we accept:
/// the partial token finished by brute force over the bytes it may need, then the smallest
/// remaining fields and CRLF. The result is then checked against ppp like any input.
fn v1_completion(p: &[u8]) -> Option<Vec<u8>> {
    let accepts = |c: &[u8]| matches!(decode(c), Ok(Decoded::Complete { consumed, .. }) if consumed == c.len());
    let with = |parts: &[&[u8]]| -> Vec<u8> {
        [p].iter()
            .chain(parts)
            .flat_map(|x| x.iter().copied())
            .collect()
    };
    if p.ends_with(b"\r") {
        return Some(with(&[b"\n"])).filter(|c| accepts(c));
    }
    let fields: Vec<&[u8]> = p[V1_SIGNATURE.len()..].split(|&b| b == b' ').collect();
    if fields.len() == 1 {
        let full: [&[u8]; 3] = [b"TCP4 0.0.0.0 0.0.0.0 0 0", b"TCP6 :: :: 0 0", b"UNKNOWN"];
        return full
            .iter()
            .filter(|f| f.starts_with(fields[0]))
            .map(|f| with(&[&f[fields[0].len()..], b"\r\n"]))
            .find(|c| accepts(c));
    }
    let (alphabet, max_len, min_addr): (&[u8], usize, &[u8]) = match fields[0] {
        b"UNKNOWN" => return Some(with(&[b"\r\n"])).filter(|c| accepts(c)),
        b"TCP4" => (b"0.", 7, b"0.0.0.0"),
        b"TCP6" => (b"0:.", 6, b"::"),
        _ => return None,
    };
    let partial = fields.len() - 2;
    if partial > 3 {
        return None;
    }
    let (alphabet, max_len) = if partial < 2 {
        (alphabet, max_len)
    } else {
        (&b"0"[..], 1)
    };
    let mut tail = Vec::new();
    for later in partial + 1..4 {
        tail.push(b' ');
        tail.extend_from_slice(if later < 2 { min_addr } else { b"0" });
    }
    tail.extend_from_slice(b"\r\n");
    for len in 0..=max_len {
        for mut code in 0..alphabet.len().pow(len as u32) {
            let mut x = Vec::with_capacity(len);
            for _ in 0..len {
                x.push(alphabet[code % alphabet.len()]);
                code /= alphabet.len();
            }
            let c = with(&[&x, &tail]);
            if accepts(&c) {
                return Some(c);
            }
        }
    }
    None
}

/// Family nibble -> address block size, as `ppp` sees it.
fn ppp_block_len(fam_proto: u8) -> Option<usize> {
    match fam_proto >> 4 {
        0 => Some(0),
        1 => Some(12),
        2 => Some(36),
        3 => Some(216),
        _ => None,
    }
}

/// `input` (starting with the v2 signature) completed in the way most likely to be accepted:
/// missing fixed bytes from a TCP4 PROXY header, a length that fits the family, zero block.
fn complete_v2(input: &[u8]) -> Vec<u8> {
    let mut c = input.to_vec();
    if c.len() < 13 {
        c.push(0x21);
    }
    if c.len() < 14 {
        c.push(0x11);
    }
    let need = ppp_block_len(c[13]).unwrap_or(0) as u16;
    if c.len() < 15 {
        c.push((need >> 8) as u8);
    }
    if c.len() < 16 {
        c.push(if c[14] == 0 { need as u8 } else { 0 });
    }
    let len = usize::from(u16::from_be_bytes([c[14], c[15]]));
    if c.len() < V2_FIXED_LEN + len {
        c.resize(V2_FIXED_LEN + len, 0);
    }
    c
}

fn check_v2(input: &[u8], ours: Result<Decoded<'_>, ProxyError>, stats: &mut Stats) {
    let ver_cmd = input.get(12).copied();
    let fam_proto = input.get(13).copied();
    let len = input
        .get(14..16)
        .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])));

    if let (Some(0x21), Some(f @ (0x01 | 0x02 | 0x10 | 0x20 | 0x30))) = (ver_cmd, fam_proto) {
        assert_eq!(ours, Err(ProxyError::V2BadFamily(f)), "{input:?}");
        stats.add("excluded_v2_half_unspec_family");
        return;
    }
    if let (Some(0x20), Some(f)) = (ver_cmd, fam_proto) {
        let ppp_refuses_family = ppp_block_len(f).is_none() || f & 0x0F > 2;
        let too_short = matches!((len, ppp_block_len(f)), (Some(l), Some(n)) if l < n);
        if ppp_refuses_family || too_short {
            match len {
                Some(l) if input.len() >= V2_FIXED_LEN + l => match ours {
                    Ok(Decoded::Complete { consumed, header }) => {
                        assert_eq!(consumed, V2_FIXED_LEN + l);
                        assert_eq!(header.command, Command::Local);
                        assert_eq!(header.addresses, Addresses::Unspecified);
                        assert!(header.tlv_bytes.is_empty());
                    }
                    other => panic!("LOCAL must be accepted: {other:?} {input:?}"),
                },
                _ => assert_eq!(ours, Ok(Decoded::Partial), "{input:?}"),
            }
            stats.add("excluded_v2_local_family");
            return;
        }
    }

    match ppp_v2(input) {
        PppV2::Accepted {
            consumed: ppp_consumed,
            local,
            addr,
            tlv_bytes,
            tlvs,
        } => {
            let Ok(Decoded::Complete { consumed, header }) = ours else {
                panic!("ppp accepts, we say {ours:?}: {input:?}");
            };
            assert_eq!(consumed, ppp_consumed, "consumed {input:?}");
            assert_eq!(header.command == Command::Local, local, "{input:?}");
            if local {
                assert_eq!(header.addresses, Addresses::Unspecified);
                assert!(header.tlv_bytes.is_empty());
            } else {
                assert_eq!(ours_addr(header.addresses), addr, "addresses {input:?}");
                assert_eq!(header.tlv_bytes, &tlv_bytes[..], "tlv bytes {input:?}");
                let our_tlvs: Vec<(u8, Vec<u8>)> =
                    header.tlvs().map(|t| (t.kind, t.value.to_vec())).collect();
                assert_eq!(our_tlvs, tlvs, "tlvs {input:?}");
            }
            stats.add("v2_both_accept");
        }
        PppV2::Refused => {
            assert!(ours.is_err(), "ppp refuses, we say {ours:?}: {input:?}");
            stats.add("v2_both_refuse");
        }
        PppV2::Partial => {
            assert_eq!(ours, Ok(Decoded::Partial), "{input:?}");
            check_v2_completion(input, stats);
            stats.add("v2_both_partial");
        }
        PppV2::Incomplete => match ours {
            Ok(Decoded::Partial) => {
                check_v2_completion(input, stats);
                stats.add("v2_partial_vs_ppp_incomplete");
            }
            Err(e) => {
                // We refuse from the 13th byte on; ppp waits for 16. No completion may pass.
                let c = complete_v2(input);
                assert!(
                    matches!(ppp_v2(&c), PppV2::Refused),
                    "we refused early ({e:?}) but ppp accepts {c:?}"
                );
                stats.add("v2_early_refuse_confirmed");
            }
            Ok(complete) => panic!("complete below 16 bytes: {complete:?}"),
        },
    }
}

/// Our Partial must be honest: the likeliest completion is accepted by both parsers.
fn check_v2_completion(input: &[u8], stats: &mut Stats) {
    let c = complete_v2(input);
    assert!(
        matches!(decode(&c), Ok(Decoded::Complete { .. })),
        "Partial {input:?} but completion {c:?} refused: {:?}",
        decode(&c)
    );
    assert!(
        matches!(ppp_v2(&c), PppV2::Accepted { .. }),
        "completion {c:?} refused by ppp"
    );
    stats.add("v2_partial_completion_accepted");
}

// ---- generators ----

fn gen_ipv4(rng: &mut Rng) -> Ipv4Addr {
    match rng.below(10) {
        0 => Ipv4Addr::UNSPECIFIED,
        1 => Ipv4Addr::BROADCAST,
        _ => Ipv4Addr::from(rng.next() as u32),
    }
}

fn gen_ipv6(rng: &mut Rng) -> Ipv6Addr {
    if rng.chance(15) {
        return gen_ipv4(rng).to_ipv6_mapped();
    }
    let mut groups = [0u16; 8];
    for g in &mut groups {
        *g = match rng.below(10) {
            0..=3 => 0,
            4 => 0xffff,
            _ => rng.u16(),
        };
    }
    Ipv6Addr::from(groups)
}

fn ipv6_text(rng: &mut Rng, addr: Ipv6Addr) -> String {
    let groups = addr.segments();
    match rng.below(5) {
        0 => addr.to_string(),
        1 => addr.to_string().to_uppercase(),
        2 => {
            // Every group written out, with random heading zeroes and case.
            let parts: Vec<String> = groups
                .iter()
                .map(|g| {
                    let width = rng.below(4) + 1;
                    let s = format!("{g:0width$x}");
                    if rng.chance(50) {
                        s.to_uppercase()
                    } else {
                        s
                    }
                })
                .collect();
            parts.join(":")
        }
        3 => {
            // Six groups and a dotted-quad tail.
            let [a, b, c, d] = [
                groups[6] >> 8,
                groups[6] & 0xff,
                groups[7] >> 8,
                groups[7] & 0xff,
            ];
            let head: Vec<String> = groups[..6].iter().map(|g| format!("{g:x}")).collect();
            format!("{}:{a}.{b}.{c}.{d}", head.join(":"))
        }
        _ => {
            // "::" over a random run of groups forced to zero.
            let start = rng.below(8);
            let end = start + 1 + rng.below(8 - start);
            let head: Vec<String> = groups[..start].iter().map(|g| format!("{g:x}")).collect();
            let tail: Vec<String> = groups[end..].iter().map(|g| format!("{g:x}")).collect();
            format!("{}::{}", head.join(":"), tail.join(":"))
        }
    }
}

fn gen_port(rng: &mut Rng) -> u16 {
    match rng.below(8) {
        0 => 0,
        1 => 65535,
        2 => rng.below(10) as u16,
        _ => rng.u16(),
    }
}

/// A valid v1 header (maybe too long when TCP6 texts are long; then both must refuse).
fn gen_v1(rng: &mut Rng) -> Vec<u8> {
    let line = match rng.below(10) {
        0..=3 => format!(
            "PROXY TCP4 {} {} {} {}",
            gen_ipv4(rng),
            gen_ipv4(rng),
            gen_port(rng),
            gen_port(rng)
        ),
        4..=7 => {
            let (a, b) = (gen_ipv6(rng), gen_ipv6(rng));
            format!(
                "PROXY TCP6 {} {} {} {}",
                ipv6_text(rng, a),
                ipv6_text(rng, b),
                gen_port(rng),
                gen_port(rng)
            )
        }
        8 => "PROXY UNKNOWN".to_string(),
        _ => {
            // UNKNOWN with some rest to ignore; mostly up to 4 spaces, sometimes more.
            let words = if rng.chance(80) {
                rng.below(4) + 1
            } else {
                rng.below(8) + 5
            };
            let mut line = "PROXY UNKNOWN".to_string();
            for _ in 0..words {
                line.push(' ');
                for _ in 0..rng.below(12) {
                    line.push(*rng.pick(b"abcdef0123456789:.-_XYZ") as char);
                }
            }
            line
        }
    };
    let mut out = line.into_bytes();
    out.extend_from_slice(b"\r\n");
    out
}

/// A valid v2 header.
fn gen_v2(rng: &mut Rng) -> Vec<u8> {
    let local = rng.chance(15);
    let fam_proto = if local && rng.chance(40) {
        rng.byte()
    } else {
        *rng.pick(&[0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32])
    };
    let mut block = Vec::new();
    match fam_proto {
        _ if local => {
            block = {
                let n = rng.below(20);
                rng.bytes(n)
            }
        }
        0x11 | 0x12 => {
            block.extend_from_slice(&gen_ipv4(rng).octets());
            block.extend_from_slice(&gen_ipv4(rng).octets());
            block.extend_from_slice(&gen_port(rng).to_be_bytes());
            block.extend_from_slice(&gen_port(rng).to_be_bytes());
        }
        0x21 | 0x22 => {
            block.extend_from_slice(&gen_ipv6(rng).octets());
            block.extend_from_slice(&gen_ipv6(rng).octets());
            block.extend_from_slice(&gen_port(rng).to_be_bytes());
            block.extend_from_slice(&gen_port(rng).to_be_bytes());
        }
        0x31 | 0x32 => {
            for _ in 0..2 {
                let mut path = [0u8; 108];
                let n = rng.below(108);
                for b in &mut path[..n] {
                    *b = *rng.pick(b"/abcdefghijklmnop.sock");
                }
                block.extend_from_slice(&path);
            }
        }
        _ => {
            block = {
                let n = rng.below(8);
                rng.bytes(n)
            }
        }
    }
    if !local {
        for _ in 0..rng.below(4) {
            let (kind, value) = match rng.below(4) {
                0 => {
                    let mut v = vec![0x01];
                    v.extend_from_slice(format!("vpce-{:017x}", rng.next() >> 4).as_bytes());
                    (0xEA, v)
                }
                1 => (0x01, b"h2".to_vec()),
                2 => (0x04, vec![0; rng.below(4)]),
                _ => (rng.byte(), {
                    let n = rng.below(24);
                    rng.bytes(n)
                }),
            };
            block.push(kind);
            block.extend_from_slice(&(value.len() as u16).to_be_bytes());
            block.extend_from_slice(&value);
        }
    }
    let mut out = V2_SIGNATURE.to_vec();
    out.push(if local { 0x20 } else { 0x21 });
    out.push(fam_proto);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(&block);
    out
}

/// Bytes that tend to matter to one of the two formats.
const INTERESTING: &[u8] = b" \r\n0129:.+-fFT\x00\xff\x80\x11\x21\x20\x01\x10\x22\x31";

/// Tokens swapped into v1 lines.
const V1_TOKENS: &[&str] = &[
    "TCP4",
    "TCP6",
    "UNKNOWN",
    "",
    "0",
    "00",
    "+1",
    "+80",
    "-1",
    "65535",
    "65536",
    "99999",
    "1.2.3.4",
    "01.2.3.4",
    "1.2.3",
    "256.0.0.1",
    "::",
    "::1",
    "::ffff:1.2.3.4",
    "fe80::1%1",
    "1:2:3:4:5:6:7:8:9",
    "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
    "\u{e9}",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..rng.below(3) + 1 {
        let at = if m.is_empty() { 0 } else { rng.below(m.len()) };
        match rng.below(11) {
            0 if !m.is_empty() => m[at] = rng.byte(),
            1 if !m.is_empty() => m[at] = *rng.pick(INTERESTING),
            2 if !m.is_empty() => {
                m.remove(at);
            }
            3 => m.insert(at, *rng.pick(INTERESTING)),
            4 => m.truncate(at),
            5 => {
                let extra = {
                    let n = rng.below(8) + 1;
                    rng.bytes(n)
                };
                m.extend_from_slice(&extra);
            }
            6 if m.starts_with(V1_SIGNATURE) => {
                // Replace one space-separated token of the line.
                let end = m.iter().position(|&b| b == b'\r').unwrap_or(m.len());
                let mut fields: Vec<Vec<u8>> =
                    m[..end].split(|&b| b == b' ').map(<[u8]>::to_vec).collect();
                let i = 1 + rng.below(fields.len().max(2) - 1);
                if i < fields.len() {
                    fields[i] = rng.pick(V1_TOKENS).as_bytes().to_vec();
                }
                let mut line = fields.join(&b' ');
                line.extend_from_slice(&m[end..]);
                m = line;
            }
            7 if m.len() >= 16 && m.starts_with(&V2_SIGNATURE) => {
                // Rewrite the length: near the real one, or anything.
                let len = u16::from_be_bytes([m[14], m[15]]);
                let new = if rng.chance(70) {
                    len.wrapping_add(rng.below(7) as u16).wrapping_sub(3)
                } else {
                    rng.u16()
                };
                m[14..16].copy_from_slice(&new.to_be_bytes());
            }
            8 if m.len() >= 14 && m.starts_with(&V2_SIGNATURE) => {
                let i = 12 + rng.below(2);
                m[i] = *rng.pick(&[
                    0x20, 0x21, 0x22, 0x11, 0x31, 0x00, 0x01, 0x02, 0x10, 0x20, 0x30, 0x13, 0x41,
                    0x33,
                ]);
            }
            9 if !m.is_empty() && m[at] == b' ' => m.insert(at, b' '),
            _ => {
                let extra = b"GET / HTTP/1.1\r\n";
                m.extend_from_slice(&extra[..rng.below(extra.len()) + 1]);
            }
        }
    }
    m
}

fn gen_random(rng: &mut Rng) -> Vec<u8> {
    let mut out = match rng.below(4) {
        0 => V1_SIGNATURE[..rng.below(7)].to_vec(),
        1 => V2_SIGNATURE[..rng.below(13)].to_vec(),
        _ => Vec::new(),
    };
    let extra = {
        let n = rng.below(40);
        rng.bytes(n)
    };
    out.extend_from_slice(&extra);
    out
}

#[test]
fn decode_agrees_with_ppp() {
    // The allocation meter works: a Vec moves it.
    let before = counting_alloc::this_thread();
    drop(std::hint::black_box(vec![0u8; 8]));
    assert!(counting_alloc::this_thread() > before);

    let mut stats = Stats::default();
    for seed in SEEDS {
        let mut rng = Rng(seed);
        let mut valid = Vec::new();
        for _ in 0..V1_HEADERS {
            valid.push(gen_v1(&mut rng));
        }
        for _ in 0..V2_HEADERS {
            valid.push(gen_v2(&mut rng));
        }
        for header in &valid {
            // Every strict prefix, the header itself, and with application bytes after it.
            let step = if header.len() > 64 {
                1 + rng.below(7)
            } else {
                1
            };
            for cut in (0..header.len()).step_by(step) {
                check(&header[..cut], &mut stats);
                if let Ok(Decoded::Complete { .. }) = decode(header) {
                    assert_eq!(
                        decode(&header[..cut]),
                        Ok(Decoded::Partial),
                        "{header:?} cut at {cut}"
                    );
                }
            }
            check(header, &mut stats);
            let mut with_app = header.clone();
            with_app.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
            check(&with_app, &mut stats);
            for _ in 0..MUTANTS_PER_HEADER {
                let mutant = mutate(&mut rng, header);
                check(&mutant, &mut stats);
                let mutant = mutate(&mut rng, &mutant);
                check(&mutant, &mut stats);
                if mutant.len() > 13 && mutant.starts_with(&V2_SIGNATURE) {
                    // The bytes v2 checks before ppp can: 13 to 15 bytes in.
                    let cut = (13 + rng.below(3)).min(mutant.len());
                    check(&mutant[..cut], &mut stats);
                }
            }
        }
        for _ in 0..RANDOM_BUFFERS {
            let buf = gen_random(&mut rng);
            check(&buf, &mut stats);
        }
    }

    for (what, n) in &stats.0 {
        println!("{what:>34}: {n}");
    }
    println!("{:>34}: {}", "inputs checked", stats.inputs());
    assert!(
        stats.inputs() > 100_000,
        "too few cases: {}",
        stats.inputs()
    );
    for must in [
        "v1_both_accept",
        "v1_both_refuse",
        "v1_early_refuse_confirmed",
        "v2_both_accept",
        "v2_both_refuse",
        "v2_both_partial",
        "v2_early_refuse_confirmed",
        "not_proxy_agree",
    ] {
        assert!(stats.get(must) > 100, "{must} only {}", stats.get(must));
    }
}
