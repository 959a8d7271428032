//! Every length field of the captured hellos, made to run past its enclosing vector, must give
//! that field's own error; every cut of a hello body must name the field it falls in.

mod common;

use common::*;
use tlsgate_wire::{HelloError, Peek};

fn set_len(message: &mut [u8], field: &LengthField, value: usize) {
    match field.width {
        1 => message[field.offset] = u8::try_from(value).unwrap(),
        _ => message[field.offset..field.offset + 2]
            .copy_from_slice(&u16::try_from(value).unwrap().to_be_bytes()),
    }
}

#[test]
fn each_length_field_running_past_its_vector_gives_its_own_error() {
    let mut mutated = 0;
    for v in VECTORS {
        let message = handshake_message(v.bytes);
        for field in length_fields(&message) {
            let over = field.room + 1;
            if over >= 1 << (8 * field.width) {
                // A 1-byte length cannot reach past a long remainder (session id and
                // compression before the extensions); the cut test below covers those.
                continue;
            }
            let mut bad = message.clone();
            set_len(&mut bad, &field, over);
            assert_eq!(
                peek(&one_record(&bad), MAX),
                Peek::Invalid(field.overflow),
                "{}: {} at {} set to {over}",
                v.name,
                field.what,
                field.offset
            );
            mutated += 1;
        }
    }
    // Extensions block, each extension, SNI list and name, ALPN list and names, versions.
    assert!(mutated > 100, "only {mutated} fields mutated");
}

#[test]
fn each_length_field_of_a_split_hello_gives_the_same_error() {
    let message = handshake_message(vector("curl_h2"));
    for field in length_fields(&message) {
        let over = field.room + 1;
        if over >= 1 << (8 * field.width) {
            continue;
        }
        let mut bad = message.clone();
        set_len(&mut bad, &field, over);
        let split = into_records(&bad, &[7, 1, 300]);
        assert_eq!(
            peek(&split, MAX),
            Peek::Invalid(field.overflow),
            "{} at {}",
            field.what,
            field.offset
        );
    }
}

/// The error a hello body cut at `cut` bytes must give, from the field the cut falls in.
fn expected_for_cut(message: &[u8], cut: usize) -> Option<HelloError> {
    let fields = length_fields(message);
    let at = |what: &str| fields.iter().find(|f| f.what == what).unwrap().offset;
    let body = cut - 4;
    Some(match cut {
        _ if body < 2 => HelloError::TruncatedVersion,
        _ if body < 34 => HelloError::TruncatedRandom,
        c if c < at("cipher_suites") => HelloError::TruncatedSessionId,
        c if c < at("compression") => HelloError::TruncatedCipherSuites,
        c if c < at("extensions") => HelloError::TruncatedCompression,
        // Cut right after compression: a valid hello without extensions.
        c if c == at("extensions") => return None,
        _ => HelloError::TruncatedExtensions,
    })
}

#[test]
fn each_cut_of_a_hello_body_names_the_field_it_falls_in() {
    for v in VECTORS {
        let message = handshake_message(v.bytes);
        for cut in 4..message.len() {
            let mut short = message[..cut].to_vec();
            fix_handshake_len(&mut short);
            let got = peek(&one_record(&short), MAX);
            match expected_for_cut(&message, cut) {
                Some(error) => {
                    assert_eq!(got, Peek::Invalid(error), "{}: cut at {cut}", v.name)
                }
                None => match got {
                    Peek::Complete(info) => {
                        assert_eq!(info.sni, None, "{}", v.name);
                        assert!(info.alpn.is_empty() && info.supported_versions.is_empty());
                    }
                    other => panic!("{}: cut before extensions: {other:?}", v.name),
                },
            }
        }
    }
}

#[test]
fn a_handshake_length_short_of_the_record_is_trailing_data() {
    let mut message = handshake_message(vector("openssl_tls13"));
    let len = message.len() - 4 - 1;
    message[1..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes()[1..]);
    assert_eq!(
        peek(&one_record(&message), MAX),
        Peek::Invalid(HelloError::TrailingHandshakeData)
    );
}

#[test]
fn a_handshake_length_past_the_records_waits_for_more() {
    let mut message = handshake_message(vector("openssl_tls13"));
    let len = message.len() - 4 + 10;
    message[1..4].copy_from_slice(&u32::try_from(len).unwrap().to_be_bytes()[1..]);
    // The record ends where the hello would go on: more records may follow.
    let stream = one_record(&message);
    assert_eq!(peek(&stream, MAX), Peek::Incomplete { need: 5 + 10 });
}

#[test]
fn a_record_length_past_the_limit_is_record_too_large() {
    let mut stream = vector("curl_h2").to_vec();
    stream[3..5].copy_from_slice(&(16384u16 + 257).to_be_bytes());
    assert_eq!(
        peek(&stream, usize::MAX),
        Peek::Invalid(HelloError::RecordTooLarge)
    );
    stream[3..5].copy_from_slice(&(16384u16 + 256).to_be_bytes());
    assert!(matches!(
        peek(&stream, usize::MAX),
        Peek::Invalid(HelloError::TrailingHandshakeData)
    ));
}
