//! What a payload carries so the receiver can verify it without asking anyone.
//!
//! ```text
//! len >= 32:  seq:u64 | sender:u32 | receiver:u32 | checksum:u64 | send_ns:u64 | filler
//! len <  32:  the first len bytes of  seq:u64 | sender:u32 | receiver:u32 | filler
//! ```
//! `seq` counts messages per (sender, receiver) pair from 0. The checksum covers every other
//! byte (identity, send time and filler). Filler is seeded data, derived from the message's key,
//! so a short payload is fully predictable and is compared byte for byte. All big-endian.

use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed};

use crate::scenario::{fill, mix, PayloadSize};

/// How sized payloads are made: the run's seed and the size or range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The run's seed.
    pub seed: u64,
    /// Payload size or range.
    pub size: PayloadSize,
}

impl Spec {
    /// The seed of message `seq` from `sender` to `receiver`.
    pub fn key(&self, sender: usize, receiver: usize, seq: u64) -> u64 {
        mix(self.seed ^ mix((sender as u64) << 32 | receiver as u64) ^ mix(seq))
    }

    /// The payload length for a message key.
    pub fn len(&self, key: u64) -> usize {
        let PayloadSize { min, max } = self.size;
        if min == max {
            return min;
        }
        // Pin the edges now and then so the smallest and largest sizes always occur.
        match key % 16 {
            0 => min,
            1 => max,
            _ => min + (mix(key) % (max - min + 1) as u64) as usize,
        }
    }
}

/// A flag in `seq`: the first message a restarted sender sends to this receiver. What its dead
/// predecessor queued but never wrote is gone, so the receiver's next expected sequence may be
/// skipped over, once, here (runs with `--nemesis kill/restart` only).
pub const RESTART: u64 = 1 << 63;

/// Bytes of the full header.
pub const HEADER: usize = 32;
/// Bytes that identify a message (seq, sender, receiver).
pub const IDENT: usize = 16;

/// The identity fields of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ident {
    /// Per-pair sequence.
    pub seq: u64,
    /// Sender index.
    pub sender: u32,
    /// Receiver index.
    pub receiver: u32,
}

/// Reads the identity fields, if the payload is long enough to hold them.
pub fn ident(p: &[u8]) -> Option<Ident> {
    if p.len() < IDENT {
        return None;
    }
    Some(Ident {
        seq: u64::from_be_bytes(p[0..8].try_into().ok()?),
        sender: u32::from_be_bytes(p[8..12].try_into().ok()?),
        receiver: u32::from_be_bytes(p[12..16].try_into().ok()?),
    })
}

/// The send time in a full payload (CLOCK_MONOTONIC, ns).
pub fn send_ns(p: &[u8]) -> Option<u64> {
    (p.len() >= HEADER).then(|| u64::from_be_bytes(p[24..32].try_into().unwrap_or_default()))
}

/// The checksum of a full payload: every byte but the checksum field itself, so a flipped bit
/// anywhere (identity included) shows as damage, not as some other fault.
fn checksum(p: &[u8]) -> u64 {
    // XXH3: a fast non-cryptographic 64-bit hash made for checksums, the same everywhere (it
    // replaced SipHash, which was a third of a client's instructions). The identity's hash
    // seeds the hash of the rest.
    xxh3_64_with_seed(&p[24..], xxh3_64(&p[..16]))
}

/// For a payload of at least 32 bytes: whether its checksum holds (None when it is shorter).
pub fn intact(p: &[u8]) -> Option<bool> {
    (p.len() >= HEADER)
        .then(|| u64::from_be_bytes(p[16..24].try_into().unwrap_or_default()) == checksum(p))
}

/// Writes the payload of message `seq` from `sender` to `receiver` into `out` (replacing it).
pub fn encode(sc: &Spec, sender: usize, receiver: usize, seq: u64, now_ns: u64, out: &mut Vec<u8>) {
    let key = sc.key(sender, receiver, seq);
    let len = sc.len(key);
    out.clear();
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&(sender as u32).to_be_bytes());
    out.extend_from_slice(&(receiver as u32).to_be_bytes());
    if len >= HEADER {
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&now_ns.to_be_bytes());
        out.resize(len, 0);
        fill(key, &mut out[HEADER..]);
        let sum = checksum(out);
        out[16..24].copy_from_slice(&sum.to_be_bytes());
    } else {
        out.resize(len.max(IDENT), 0);
        fill(key, &mut out[IDENT..]);
        out.truncate(len);
    }
}

/// Why a payload is not the message it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// Its length is not the length that was sent.
    Length {
        /// Length sent.
        expected: usize,
        /// Length received.
        got: usize,
    },
    /// Its bytes are not the bytes that were sent.
    Bytes,
}

/// Checks a payload against message `seq` of the pair (whose identity the caller has
/// already matched, where the payload holds one).
pub fn check(sc: &Spec, sender: usize, receiver: usize, seq: u64, p: &[u8]) -> Result<(), Damage> {
    check_inner(sc, sender, receiver, seq, p, false)
}

/// [`check`] for a payload whose checksum [`intact`] has already confirmed: for a full payload
/// only the length is left to check (a short one is still compared byte for byte).
pub fn check_intact(
    sc: &Spec,
    sender: usize,
    receiver: usize,
    seq: u64,
    p: &[u8],
) -> Result<(), Damage> {
    check_inner(sc, sender, receiver, seq, p, true)
}

fn check_inner(
    sc: &Spec,
    sender: usize,
    receiver: usize,
    seq: u64,
    p: &[u8],
    sum_checked: bool,
) -> Result<(), Damage> {
    let key = sc.key(sender, receiver, seq);
    let len = sc.len(key);
    if p.len() != len {
        return Err(Damage::Length {
            expected: len,
            got: p.len(),
        });
    }
    if len >= HEADER {
        let sum = u64::from_be_bytes(p[16..24].try_into().unwrap_or_default());
        if !sum_checked && sum != checksum(p) {
            return Err(Damage::Bytes);
        }
        return Ok(());
    }
    let mut want = Vec::with_capacity(HEADER);
    encode(sc, sender, receiver, seq, 0, &mut want);
    if want != p {
        return Err(Damage::Bytes);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::PayloadSize;

    fn sc(min: usize, max: usize) -> Spec {
        Spec {
            seed: 7,
            size: PayloadSize { min, max },
        }
    }

    #[test]
    fn every_size_round_trips_and_one_flipped_bit_is_caught() {
        for len in [0, 1, 8, 15, 16, 17, 31, 32, 33, 64, 1000] {
            let s = sc(len, len);
            let mut p = Vec::new();
            encode(&s, 1, 2, 5, 123, &mut p);
            assert_eq!(p.len(), len);
            assert_eq!(check(&s, 1, 2, 5, &p), Ok(()), "len {len}");
            for bit in 0..p.len() * 8 {
                let mut q = p.clone();
                q[bit / 8] ^= 1 << (bit % 8);
                let caught = check(&s, 1, 2, 5, &q).is_err() || ident(&q) != ident(&p);
                assert!(caught, "len {len}: flipped bit {bit} not caught");
            }
        }
    }

    #[test]
    fn filler_is_not_zeros() {
        let s = sc(64, 64);
        let mut p = Vec::new();
        encode(&s, 0, 1, 0, 0, &mut p);
        assert!(p[HEADER..].iter().any(|&b| b != 0));
    }
}
