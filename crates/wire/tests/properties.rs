//! Property tests: any record split and any TCP segmenting give the same facts; arbitrary bytes
//! never panic and every result stays within the input and the bound.

mod common;

use common::*;
use proptest::prelude::*;
use tlsgate_wire::{Peek, peek_client_hello};

/// The captured vectors plus the synthesized post-quantum hello, as handshake messages.
fn messages() -> Vec<Vec<u8>> {
    let mut all: Vec<Vec<u8>> = VECTORS.iter().map(|v| handshake_message(v.bytes)).collect();
    all.push(browser_like_pq_hello(HOST));
    all
}

fn sorted_cuts(cuts: Vec<usize>, len: usize) -> Vec<usize> {
    let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % len).collect();
    cuts.sort_unstable();
    cuts.dedup();
    cuts
}

/// Once a prefix is decided (not Incomplete), more bytes never change the kind of decision.
fn decided_kind(peek: &Peek) -> Option<&'static str> {
    match peek {
        Peek::Complete(_) => Some("complete"),
        Peek::Invalid(_) => Some("invalid"),
        Peek::NotTls => Some("not_tls"),
        Peek::Incomplete { .. } => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn keeps_facts_across_random_record_splits_and_segments(
        which in 0usize..10,
        sizes in prop::collection::vec(1usize..600, 1..12),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let all = messages();
        let message = &all[which % all.len()];
        let expected = complete(&one_record(message), usize::MAX);
        let stream = into_records(message, &sizes);
        let cuts = sorted_cuts(cuts, stream.len());
        let Peek::Complete(info) = feed_in_segments(&stream, &cuts, usize::MAX) else {
            panic!("split hello not complete");
        };
        prop_assert_eq!(&info.sni, &expected.sni);
        prop_assert_eq!(&info.alpn, &expected.alpn);
        prop_assert_eq!(&info.supported_versions, &expected.supported_versions);
        prop_assert_eq!(info.legacy_version, expected.legacy_version);
        prop_assert_eq!(info.hello_len, expected.hello_len);
        prop_assert_eq!(info.consumed, stream.len());
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_in_bounds(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        max in prop_oneof![Just(16 * 1024), Just(usize::MAX), 0usize..4096],
    ) {
        peek(&bytes, max);
    }

    #[test]
    fn arbitrary_record_payloads_never_panic_and_stay_in_bounds(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8),
        first_is_hello in any::<bool>(),
        max in prop_oneof![Just(16 * 1024), 0usize..2048],
    ) {
        let mut stream = Vec::new();
        for (i, payload) in payloads.iter().enumerate() {
            let mut payload = payload.clone();
            if i == 0 && first_is_hello && !payload.is_empty() {
                payload[0] = 1;
            }
            stream.extend_from_slice(&record(0x16, &payload));
        }
        peek(&stream, max);
    }

    #[test]
    fn a_flipped_byte_in_a_real_hello_never_panics(
        which in 0usize..10,
        at in any::<usize>(),
        value in any::<u8>(),
        one_byte_records in any::<bool>(),
    ) {
        let all = messages();
        let mut message = all[which % all.len()].clone();
        let at = at % message.len();
        message[at] = value;
        let stream = if one_byte_records {
            into_records(&message, &[1])
        } else {
            one_record(&message)
        };
        peek(&stream, usize::MAX);
        peek(&stream, MAX);
    }

    #[test]
    fn a_decided_prefix_stays_decided(
        bytes in prop::collection::vec(any::<u8>(), 1..512),
        hello_start in any::<bool>(),
        cut in any::<usize>(),
        max in prop_oneof![Just(16 * 1024), 0usize..1024],
    ) {
        let mut bytes = bytes;
        if hello_start && bytes.len() >= 6 {
            bytes[..3].copy_from_slice(&[0x16, 3, 1]);
            bytes[5] = 1;
        }
        let cut = cut % (bytes.len() + 1);
        let early = peek_client_hello(&bytes[..cut], max);
        let late = peek_client_hello(&bytes, max);
        if let Some(kind) = decided_kind(&early) {
            prop_assert_eq!(Some(kind), decided_kind(&late), "{:?} then {:?}", early, late);
        }
        if let Peek::Complete(_) = early {
            prop_assert_eq!(early, late);
        }
    }
}
