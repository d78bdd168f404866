//! The frame decoder on arbitrary bytes in arbitrary splits: it never panics, never holds more
//! than one frame plus one read, and cuts the same frames whatever the splits.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use relay_sim::protocol::{Decoder, ProtocolError, HEADER_BYTES};

#[derive(Arbitrary, Debug)]
struct Input {
    max_frame: u16,
    splits: Vec<u8>,
    bytes: Vec<u8>,
}

/// Every frame (kind, body) until the end or the first violation.
fn frames(
    max_frame: u32,
    bytes: &[u8],
    splits: &[u8],
) -> (Vec<(u8, Vec<u8>)>, Option<ProtocolError>) {
    let mut dec = Decoder::new(max_frame);
    let mut out = Vec::new();
    let mut at = 0;
    let mut cuts = splits
        .iter()
        .map(|&s| s as usize + 1)
        .chain(std::iter::once(usize::MAX));
    while at < bytes.len() {
        let end = at
            .saturating_add(cuts.next().unwrap_or(usize::MAX))
            .min(bytes.len());
        dec.extend(&bytes[at..end]);
        at = end;
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => {
                    // Both parsers must cope with any frame, and never panic.
                    let _ = f.client();
                    let _ = f.relay();
                    out.push((f.kind, f.body.to_vec()));
                }
                Ok(None) => break,
                Err(v) => return (out, Some(v)),
            }
        }
        // Never more than one partial frame is held.
        assert!(dec.buffered() < HEADER_BYTES + max_frame as usize + 1);
    }
    (out, None)
}

fuzz_target!(|input: Input| {
    let max_frame = u32::from(input.max_frame).max(1);
    let whole = frames(max_frame, &input.bytes, &[]);
    let split = frames(max_frame, &input.bytes, &input.splits);
    assert_eq!(whole, split, "the splits changed what was decoded");
});
