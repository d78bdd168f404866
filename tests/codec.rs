//! The frame codec: round trips, decoding over every split of a byte stream, every ERROR case.

use proptest::prelude::*;
use relay_sim::protocol::{self, ClientFrame, Decoder, ErrorCode, Kind, RawFrame, RelayFrame};

/// A frame as a test generates it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum F {
    Hello(Vec<u8>),
    Welcome(Vec<u8>),
    Send(Vec<u8>, Vec<u8>),
    Deliver(Vec<u8>, Vec<u8>),
    Bounce(Vec<u8>, Vec<u8>),
    Error(ErrorCode, String),
}

fn encode(f: &F, out: &mut Vec<u8>) {
    match f {
        F::Hello(n) => protocol::put_hello(out, n),
        F::Welcome(n) => protocol::put_welcome(out, n),
        F::Send(d, p) => protocol::put_send(out, d, p),
        F::Deliver(s, p) => protocol::put_deliver(out, s, p),
        F::Bounce(d, p) => protocol::put_bounce(out, d, p),
        F::Error(c, t) => protocol::put_error(out, *c, t),
    }
}

fn decode(raw: RawFrame<'_>) -> F {
    match Kind::from_u8(raw.kind).expect("known kind") {
        Kind::Hello | Kind::Send => match raw.client().expect("client frame") {
            ClientFrame::Hello(n) => F::Hello(n.to_vec()),
            ClientFrame::Send { dst, payload } => F::Send(dst.to_vec(), payload.to_vec()),
        },
        _ => match raw.relay().expect("relay frame") {
            RelayFrame::Welcome(n) => F::Welcome(n.to_vec()),
            RelayFrame::Deliver { src, payload } => F::Deliver(src.to_vec(), payload.to_vec()),
            RelayFrame::Bounce { dst, payload } => F::Bounce(dst.to_vec(), payload.to_vec()),
            RelayFrame::Error { code, text } => F::Error(
                ErrorCode::from_u16(code).expect("known code"),
                String::from_utf8(text.to_vec()).expect("utf8"),
            ),
        },
    }
}

fn name() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(
        prop_oneof![
            b'a'..=b'z',
            b'A'..=b'Z',
            b'0'..=b'9',
            Just(b'_'),
            Just(b'.'),
            Just(b'-')
        ],
        1..=32,
    )
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(any::<u8>(), 0..5000),
    ]
}

fn code() -> impl Strategy<Value = ErrorCode> {
    (1u16..=6).prop_map(|v| ErrorCode::from_u16(v).unwrap())
}

fn any_frame() -> impl Strategy<Value = F> {
    prop_oneof![
        name().prop_map(F::Hello),
        name().prop_map(F::Welcome),
        (name(), payload()).prop_map(|(d, p)| F::Send(d, p)),
        (name(), payload()).prop_map(|(s, p)| F::Deliver(s, p)),
        (name(), payload()).prop_map(|(d, p)| F::Bounce(d, p)),
        (code(), ".{0,40}").prop_map(|(c, t)| F::Error(c, t)),
    ]
}

/// Feeds `bytes` to a decoder cut at `cuts`, collecting every frame.
fn decode_split(bytes: &[u8], cuts: &[usize]) -> Vec<F> {
    let mut dec = Decoder::new(protocol::DEFAULT_MAX_FRAME);
    let mut got = Vec::new();
    let mut at = 0;
    let mut ends: Vec<usize> = cuts.iter().map(|&c| c.min(bytes.len())).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    for end in ends {
        dec.extend(&bytes[at..end]);
        at = end;
        while let Some(f) = dec.next_frame().expect("valid stream") {
            got.push(decode(f));
        }
    }
    assert_eq!(dec.buffered(), 0);
    got
}

proptest! {
    #[test]
    fn round_trip_over_random_splits(
        frames in proptest::collection::vec(any_frame(), 1..40),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
    ) {
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes);
        }
        let cuts: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        prop_assert_eq!(decode_split(&bytes, &cuts), frames);
    }

    #[test]
    fn peek_then_consume_equals_next(frames in proptest::collection::vec(any_frame(), 1..10)) {
        let mut bytes = Vec::new();
        for f in &frames {
            encode(f, &mut bytes);
        }
        let mut dec = Decoder::new(protocol::DEFAULT_MAX_FRAME);
        dec.extend(&bytes);
        let mut got = Vec::new();
        while let Some(f) = dec.peek_frame().unwrap() {
            let (f, n) = (decode(f), f.body.len());
            // Peeking twice sees the same frame.
            prop_assert_eq!(decode(dec.peek_frame().unwrap().unwrap()), f.clone());
            dec.consume(n);
            got.push(f);
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), max in 1u32..100) {
        let mut dec = Decoder::new(max);
        dec.extend(&bytes);
        while let Ok(Some(f)) = dec.next_frame() {
            let _ = f.client();
            let _ = f.relay();
        }
    }
}

#[test]
fn every_split_point_of_a_small_stream() {
    let frames = vec![
        F::Hello(b"ClientA".to_vec()),
        F::Send(b"ClientB".to_vec(), b"1".to_vec()),
        F::Send(b"ClientB".to_vec(), vec![]),
        F::Deliver(b"ClientB".to_vec(), b"2".to_vec()),
        F::Error(ErrorCode::NameTaken, "taken".into()),
    ];
    let mut bytes = Vec::new();
    for f in &frames {
        encode(f, &mut bytes);
    }
    // Every single cut, and every pair of cuts.
    for i in 0..=bytes.len() {
        assert_eq!(decode_split(&bytes, &[i]), frames, "cut at {i}");
        for j in i..=bytes.len() {
            assert_eq!(decode_split(&bytes, &[i, j]), frames, "cuts at {i}, {j}");
        }
    }
    // And one byte at a time.
    let all: Vec<usize> = (0..=bytes.len()).collect();
    assert_eq!(decode_split(&bytes, &all), frames);
}

fn violation_of(bytes: &[u8], max: u32) -> ErrorCode {
    let mut dec = Decoder::new(max);
    dec.extend(bytes);
    match dec.next_frame() {
        Err(v) => v.code,
        Ok(Some(f)) => f.client().expect_err("client parse must fail").code,
        Ok(None) => panic!("incomplete, no verdict"),
    }
}

fn raw(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

#[test]
fn every_error_case() {
    // FRAME_TOO_LARGE from the 4-byte prefix alone.
    assert_eq!(
        violation_of(&u32::MAX.to_be_bytes(), 1 << 20),
        ErrorCode::FrameTooLarge
    );
    assert_eq!(
        violation_of(&101u32.to_be_bytes(), 100),
        ErrorCode::FrameTooLarge
    );
    // BAD_FRAME: len 0, unknown types, relay->client types from a client, dst_len past body.
    assert_eq!(violation_of(&[0, 0, 0, 0], 100), ErrorCode::BadFrame);
    for kind in [0u8, 7, 200, 255] {
        assert_eq!(
            violation_of(&raw(kind, b"x"), 100),
            ErrorCode::BadFrame,
            "type {kind}"
        );
    }
    for kind in [Kind::Welcome, Kind::Deliver, Kind::Bounce, Kind::Error] {
        assert_eq!(
            violation_of(&raw(kind as u8, b"\x01ab"), 100),
            ErrorCode::BadFrame,
            "{kind:?}"
        );
    }
    assert_eq!(
        violation_of(&raw(Kind::Send as u8, b""), 100),
        ErrorCode::BadFrame
    );
    assert_eq!(
        violation_of(&raw(Kind::Send as u8, b"\x05abc"), 100),
        ErrorCode::BadFrame
    );
    // BAD_NAME from the name check.
    for bad in [&b""[..], &[b'x'; 33], b"a b", "é".as_bytes()] {
        assert_eq!(
            protocol::check_name(bad).unwrap_err().code,
            ErrorCode::BadName
        );
    }
    // A frame of exactly max_frame is fine; a partial frame is not yet a verdict.
    let ok = raw(Kind::Send as u8, &[&[1u8, b'a'][..], &[0u8; 97]].concat());
    assert_eq!(ok.len(), 4 + 100);
    let mut dec = Decoder::new(100);
    dec.extend(&ok[..50]);
    assert_eq!(dec.next_frame(), Ok(None));
    dec.extend(&ok[50..]);
    assert!(matches!(dec.next_frame(), Ok(Some(_))));
}

#[test]
fn relay_frames_reject_client_types_and_short_errors() {
    assert!(RawFrame {
        kind: Kind::Hello as u8,
        body: b"x"
    }
    .relay()
    .is_err());
    assert!(RawFrame {
        kind: Kind::Error as u8,
        body: b"\x00"
    }
    .relay()
    .is_err());
    assert!(RawFrame {
        kind: Kind::Deliver as u8,
        body: b"\x03ab"
    }
    .relay()
    .is_err());
}
