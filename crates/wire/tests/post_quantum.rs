//! A browser-like hello with an X25519MLKEM768 key share, split over two records.
//!
//! SYNTHESIZED by `common::browser_like_pq_hello`: Debian 12's OpenSSL 3.0 (and so its curl and
//! s_client) cannot offer ML-KEM, so no local client can produce this capture. The shape follows
//! current Chrome/Firefox hellos: GREASE everywhere, a 1216-byte key share, padding.

mod common;

use common::*;
use tlsgate_wire::Peek;

fn two_records(message: &[u8], first: usize) -> Vec<u8> {
    into_records(message, &[first, message.len()])
}

#[test]
fn reads_a_post_quantum_hello_split_over_two_records() {
    let message = browser_like_pq_hello(HOST);
    assert!(message.len() > 1216 + 32, "key share is in the hello");
    // Split inside the ML-KEM key share, as a 1500-byte-MTU-minded stack might.
    let stream = two_records(&message, 1000);
    assert_eq!(stream.len(), message.len() + 10);
    let info = complete(&stream, MAX);
    assert_eq!(info.sni.as_deref(), Some(HOST));
    assert_eq!(info.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
    assert_eq!(
        info.supported_versions,
        [0x0304, 0x0303],
        "GREASE version dropped"
    );
    assert_eq!(info.hello_len, message.len() - 4);
    assert_eq!(info.consumed, stream.len());
}

#[test]
fn gives_the_same_facts_wherever_the_two_records_split() {
    let message = browser_like_pq_hello(HOST);
    let whole = complete(&one_record(&message), MAX);
    for first in 1..message.len() {
        let stream = two_records(&message, first);
        let info = complete(&stream, MAX);
        assert_eq!(
            (info.sni, info.alpn, info.supported_versions, info.hello_len),
            (
                whole.sni.clone(),
                whole.alpn.clone(),
                whole.supported_versions.clone(),
                whole.hello_len
            ),
            "split at {first}"
        );
    }
}

#[test]
fn every_prefix_of_a_two_record_post_quantum_hello_is_incomplete() {
    let stream = two_records(&browser_like_pq_hello(HOST), 1000);
    let cuts: Vec<usize> = (0..stream.len()).collect();
    assert!(matches!(
        feed_in_segments(&stream, &cuts, MAX),
        Peek::Complete(_)
    ));
}

#[test]
fn waits_for_the_second_record_after_the_first_one_arrives() {
    let message = browser_like_pq_hello(HOST);
    let stream = two_records(&message, 1000);
    // The first record is whole; the hello still needs the second record's header and payload.
    let rest = message.len() - 1000;
    assert_eq!(
        peek(&stream[..1005], MAX),
        Peek::Incomplete { need: 5 + rest }
    );
}
