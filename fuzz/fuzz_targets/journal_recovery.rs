//! Feeds arbitrary bytes to journal recovery as the contents of segment
//! files. Checks its contract: no panic, memory bounded by the input (the
//! allocator's limit under `cargo fuzz` catches a forged count that sizes
//! anything), and no forged record accepted: a frame sealed for one offset
//! and planted at another, or sealed under a key the segment does not
//! have, is never replayed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice::journal::testing::{
    message_frame, outcome_frame, replay_bytes, segment_header, segment_key,
};
use sluice::journal::Outcome;

/// The id forged records use: no genuine record in the input carries it
/// unless the input itself is a valid segment built with the key (which
/// the fuzzer cannot compute), so seeing it replayed means a forgery got in.
const FORGED: u64 = 0xF0F0_F0F0_F0F0;

fuzz_target!(|data: &[u8]| {
    // Shape: first byte chooses how many segments and where forgeries go.
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    // 1. The raw bytes as a segment (the header too is arbitrary).
    let _ = replay_bytes(&[(1, rest.to_vec())]);

    // 2. A valid header with a known key, the bytes after it, and
    //    forgeries planted at offsets chosen by the input, each sealed for
    //    a different offset than the one it lands at (or another key).
    // The key depends on the whole input, so the fuzzer cannot learn a
    // tag from one run's comparisons and write it into the next input.
    let key = key_of(rest);
    let mut seg = segment_header(7, &key);
    assert_eq!(segment_key(&seg), Some((7, key)));
    seg.extend_from_slice(rest);
    let plants = usize::from(ctl % 8);
    for i in 0..plants {
        let at = rest
            .get(i * 2..i * 2 + 2)
            .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
            % (seg.len() + 1);
        let at = at.max(48);
        let wrong = at as u64 + 1 + i as u64;
        let f = match i % 3 {
            0 => message_frame(&key, 7, wrong, FORGED, &["x@y.test"], b"forged"),
            1 => outcome_frame(&key, 7, wrong, FORGED, 0, Outcome::Delivered),
            _ => message_frame(
                &[0xA5; 16],
                7,
                at as u64,
                FORGED,
                &["x@y.test"],
                b"guessed key",
            ),
        };
        let end = (at + f.len()).min(seg.len());
        if at < end {
            seg.splice(at..end, f);
        } else {
            seg.extend_from_slice(&f);
        }
    }
    let last = seg.len();
    let segments = if ctl & 0x80 != 0 {
        // Also as a sealed segment followed by an empty last one.
        vec![(7, seg), (8, segment_header(8, &key))]
    } else {
        vec![(7, seg)]
    };
    if let Ok(r) = replay_bytes(&segments) {
        assert!(
            r.messages.iter().all(|m| m.id != FORGED),
            "a forged message record was accepted"
        );
        assert!(r.stats.bytes as usize <= last + 48);
        let held: usize = r.messages.iter().map(|m| m.recipients.len()).sum();
        assert!(held <= last, "{held} recipients from {last} bytes");
    }
});

fn key_of(data: &[u8]) -> [u8; 16] {
    use std::hash::{Hash, Hasher};
    let mut key = [0u8; 16];
    for (i, half) in key.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (i, data).hash(&mut h);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    if key == [0xA5; 16] {
        key[0] = 0;
    }
    key
}
