//! Hand-built hellos and record streams that are wrong in one specific way each.

mod common;

use common::*;
use tlsgate_wire::{HelloError, Peek};

fn hello() -> HelloBuilder {
    HelloBuilder::default()
        .ext(0, sni_ext(&[HOST.as_bytes()]))
        .ext(43, versions_ext(&[0x0304]))
}

fn verdict(builder: &HelloBuilder) -> Peek {
    peek(&one_record(&builder.message()), MAX)
}

fn invalid(error: HelloError) -> Peek {
    Peek::Invalid(error)
}

#[test]
fn accepts_the_baseline_hello() {
    let info = complete(&one_record(&hello().message()), MAX);
    assert_eq!(info.sni.as_deref(), Some(HOST));
    assert_eq!(info.supported_versions, [0x0304]);
}

#[test]
fn rejects_duplicate_sni() {
    let b = HelloBuilder::default().ext(0, sni_ext(&[b"a.example", b"b.example"]));
    assert_eq!(verdict(&b), invalid(HelloError::DuplicateSni));
}

#[test]
fn rejects_a_repeated_extension() {
    let b = hello()
        .ext(16, alpn_ext(&[b"h2"]))
        .ext(16, alpn_ext(&[b"h2"]));
    assert_eq!(verdict(&b), invalid(HelloError::DuplicateExtension));
    let b = hello().ext(0, sni_ext(&[HOST.as_bytes()]));
    assert_eq!(verdict(&b), invalid(HelloError::DuplicateExtension));
}

#[test]
fn ignores_grease_extensions_even_when_they_repeat() {
    let b = hello()
        .ext(GREASE[0], Vec::new())
        .ext(GREASE[1], vec![0])
        .ext(GREASE[0], Vec::new());
    assert_eq!(
        complete(&one_record(&b.message()), MAX).sni.as_deref(),
        Some(HOST)
    );
}

#[test]
fn drops_grease_from_versions_and_alpn() {
    let b = HelloBuilder::default()
        .ext(43, versions_ext(&[GREASE[2], 0x0304, GREASE[3], 0x0303]))
        .ext(16, alpn_ext(&[&[0x1a, 0x1a], b"h2", b"http/1.1"]));
    let info = complete(&one_record(&b.message()), MAX);
    assert_eq!(info.supported_versions, [0x0304, 0x0303]);
    assert_eq!(info.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
}

#[test]
fn skips_unknown_server_name_types() {
    let mut list = vec![7, 0, 3, b'x', b'y', b'z'];
    list.extend_from_slice(&[0, 0, 9]);
    list.extend_from_slice(b"a.example");
    let b = HelloBuilder::default().ext(0, prefixed16(&list));
    assert_eq!(
        complete(&one_record(&b.message()), MAX).sni.as_deref(),
        Some("a.example")
    );
}

#[test]
fn reports_no_sni_when_only_unknown_name_types_are_sent() {
    let b = HelloBuilder::default().ext(0, prefixed16(&[7, 0, 1, b'x']));
    assert_eq!(complete(&one_record(&b.message()), MAX).sni, None);
}

#[test]
fn rejects_bad_host_names() {
    let long = vec![b'a'; 256];
    for name in [
        &b""[..],
        b"caf\xc3\xa9.example",
        b"a b.example",
        b"a\0.example",
        b"*.example",
        b"a/b",
        &long,
    ] {
        let b = HelloBuilder::default().ext(0, sni_ext(&[name]));
        assert_eq!(verdict(&b), invalid(HelloError::BadHostName), "{name:?}");
    }
}

#[test]
fn accepts_underscores_digits_and_a_trailing_dot_in_host_names() {
    let b = HelloBuilder::default().ext(0, sni_ext(&[b"_srv.Host-1.example."]));
    assert_eq!(
        complete(&one_record(&b.message()), MAX).sni.as_deref(),
        Some("_srv.host-1.example.")
    );
}

#[test]
fn rejects_malformed_server_name_lists() {
    for data in [
        vec![],                             // no list length
        vec![0],                            // half a list length
        vec![0, 0],                         // empty list
        vec![0, 1, 0],                      // entry without its name length
        vec![0, 3, 0, 0, 1],                // name length runs past the list
        vec![0, 5, 0, 0, 1, b'a'],          // list length runs past the extension
        vec![0, 4, 0, 0, 1, b'a', b'b', 9], // bytes after the list
    ] {
        let b = HelloBuilder::default().ext(0, data.clone());
        assert_eq!(verdict(&b), invalid(HelloError::BadSniList), "{data:?}");
    }
}

#[test]
fn rejects_malformed_alpn() {
    for data in [
        vec![],                       // no list length
        vec![0, 0],                   // empty list
        vec![0, 1, 0],                // empty protocol name
        vec![0, 3, 5, b'h', b'2'],    // name runs past the list
        vec![0, 3, 2, b'h', b'2', 0], // bytes after the list
    ] {
        let b = HelloBuilder::default().ext(16, data.clone());
        assert_eq!(verdict(&b), invalid(HelloError::BadAlpn), "{data:?}");
    }
}

#[test]
fn rejects_malformed_supported_versions() {
    for data in [
        vec![],
        vec![0],
        vec![1, 3],
        vec![3, 3, 4, 3],
        vec![2, 3, 4, 0],
    ] {
        let b = HelloBuilder::default().ext(43, data.clone());
        assert_eq!(
            verdict(&b),
            invalid(HelloError::BadSupportedVersions),
            "{data:?}"
        );
    }
}

#[test]
fn rejects_an_extension_header_cut_by_the_block() {
    let mut message = HelloBuilder::default().message();
    // An empty extensions block followed by 3 stray bytes, then re-declare the block as 3.
    let block_at = message.len() - 2;
    message.extend_from_slice(&[0, 0, 0]);
    message[block_at..block_at + 2].copy_from_slice(&3u16.to_be_bytes());
    fix_handshake_len(&mut message);
    assert_eq!(
        peek(&one_record(&message), MAX),
        invalid(HelloError::TruncatedExtension)
    );
}

#[test]
fn rejects_bytes_after_the_extensions_block() {
    let mut message = hello().message();
    message.push(0);
    fix_handshake_len(&mut message);
    assert_eq!(
        peek(&one_record(&message), MAX),
        invalid(HelloError::TrailingBytes)
    );
}

#[test]
fn rejects_a_half_extensions_length() {
    let mut message = HelloBuilder {
        extensions: None,
        ..HelloBuilder::default()
    }
    .message();
    message.push(0);
    fix_handshake_len(&mut message);
    assert_eq!(
        peek(&one_record(&message), MAX),
        invalid(HelloError::TruncatedExtensions)
    );
}

#[test]
fn accepts_a_hello_without_extensions() {
    let b = HelloBuilder {
        extensions: None,
        ..HelloBuilder::default()
    };
    let info = complete(&one_record(&b.message()), MAX);
    assert_eq!(
        (info.sni, info.alpn.len(), info.supported_versions.len()),
        (None, 0, 0)
    );
}

#[test]
fn rejects_a_session_id_over_32_bytes() {
    let b = HelloBuilder {
        session_id: vec![1; 33],
        ..hello()
    };
    assert_eq!(verdict(&b), invalid(HelloError::SessionIdTooLong));
}

#[test]
fn rejects_empty_or_odd_cipher_suites() {
    let b = HelloBuilder {
        cipher_suites: Vec::new(),
        ..hello()
    };
    assert_eq!(verdict(&b), invalid(HelloError::BadCipherSuites));
    let mut message = hello().message();
    let at = 4 + 2 + 32 + 1 + 32;
    message[at..at + 2].copy_from_slice(&5u16.to_be_bytes());
    assert_eq!(
        peek(&one_record(&message), MAX),
        invalid(HelloError::BadCipherSuites)
    );
}

#[test]
fn rejects_empty_compression_methods() {
    let b = HelloBuilder {
        compression: Vec::new(),
        ..hello()
    };
    assert_eq!(verdict(&b), invalid(HelloError::BadCompression));
}

#[test]
fn rejects_a_server_hello_from_its_first_handshake_byte() {
    assert_eq!(
        peek(&[0x16, 3, 1, 0, 80, 2], MAX),
        invalid(HelloError::NotClientHello)
    );
}

#[test]
fn rejects_a_one_megabyte_hello_from_its_headers() {
    // Record header plus handshake header claiming a 1 MiB body: decided from 9 bytes.
    let stream = [0x16, 3, 1, 0x40, 0, 1, 0x10, 0, 0];
    assert_eq!(peek(&stream, MAX), invalid(HelloError::TooLarge));
    // Even with the handshake header split over 1-byte records.
    let split = into_records(&stream[5..], &[1]);
    assert_eq!(peek(&split, MAX), invalid(HelloError::TooLarge));
    // With room for it, the same bytes are just the start of a long hello.
    assert!(matches!(peek(&stream, 2 << 20), Peek::Incomplete { .. }));
}

#[test]
fn rejects_a_non_handshake_record_inside_the_hello() {
    let message = hello().message();
    let (a, b) = message.split_at(20);
    for content_type in [0x14, 0x15, 0x17] {
        let mut stream = record(0x16, a);
        stream.extend_from_slice(&record(content_type, &[1]));
        stream.extend_from_slice(&record(0x16, b));
        assert_eq!(peek(&stream, MAX), invalid(HelloError::InterleavedRecord));
        // Decided from the record's first byte.
        assert_eq!(
            peek(&stream[..a.len() + 6], MAX),
            invalid(HelloError::InterleavedRecord)
        );
    }
}

#[test]
fn rejects_a_later_record_with_a_foreign_version() {
    let message = hello().message();
    let (a, b) = message.split_at(20);
    let mut stream = record(0x16, a);
    let mut second = record(0x16, b);
    second[1] = 2;
    stream.extend_from_slice(&second);
    assert_eq!(peek(&stream, MAX), invalid(HelloError::BadRecordVersion));
}

#[test]
fn rejects_an_empty_handshake_record() {
    let message = hello().message();
    let mut stream = record(0x16, &message[..10]);
    stream.extend_from_slice(&record(0x16, &[]));
    stream.extend_from_slice(&record(0x16, &message[10..]));
    assert_eq!(peek(&stream, MAX), invalid(HelloError::EmptyRecord));
    assert_eq!(
        peek(&record(0x16, &[]), MAX),
        invalid(HelloError::EmptyRecord)
    );
}

#[test]
fn rejects_a_record_longer_than_tls_allows() {
    assert_eq!(
        peek(&[0x16, 3, 1, 0x41, 0x01], usize::MAX),
        invalid(HelloError::RecordTooLarge)
    );
}

#[test]
fn says_garbage_is_not_tls() {
    for garbage in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"SSH-2.0-OpenSSH_9.2",
        &[0x80, 0x2e, 0x01], // SSLv2-compatible hello
        &[0x16, 0x00],
        &[0x16, 0xfe, 0xfd], // DTLS
        &[0x00],
    ] {
        assert_eq!(peek(garbage, MAX), Peek::NotTls, "{garbage:?}");
    }
}

#[test]
fn wants_a_record_and_handshake_header_from_an_empty_buffer() {
    assert_eq!(peek(&[], MAX), Peek::Incomplete { need: 9 });
    assert_eq!(peek(&[0x16], MAX), Peek::Incomplete { need: 8 });
}

#[test]
fn keeps_facts_of_a_hello_in_a_record_of_the_maximum_size() {
    let padded = hello().ext(21, vec![0; 16384 - 200]);
    let message = padded.message();
    assert!(message.len() <= 16384 + 256);
    let stream = one_record(&message);
    let info = complete(&stream, stream.len());
    assert_eq!(info.sni.as_deref(), Some(HOST));
}

#[test]
fn reports_the_outer_sni_of_an_ech_hello() {
    // encrypted_client_hello (0xfe0d), outer variant: the inner hello's name is encrypted, so the
    // peeker can only see the public (outer) name. Synthesized; Debian 12 clients lack ECH.
    let mut ech = vec![0, 0, 1, 0, 1, 0x2a];
    ech.extend_from_slice(&prefixed16(&[0x11; 32]));
    ech.extend_from_slice(&prefixed16(&[0x22; 144]));
    let b = hello().ext(0xfe0d, ech);
    let info = complete(&one_record(&b.message()), MAX);
    assert_eq!(info.sni.as_deref(), Some(HOST));
}
