//! Feeds arbitrary bytes to the ClientHello peeker under several bounds and checks the
//! invariants that `crates/wire/tests/fuzz_corpus.rs` also checks on the committed corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tlsgate_wire::{Peek, peek_client_hello};

const MAXES: [usize; 4] = [0, 512, 16 * 1024, usize::MAX];

fuzz_target!(|data: &[u8]| {
    for max in MAXES {
        let peek = peek_client_hello(data, max);
        match &peek {
            Peek::Complete(info) => {
                assert!(info.consumed > 0 && info.consumed <= data.len() && info.consumed <= max);
                assert!(info.hello_len + 9 <= info.consumed);
                // Bytes after the hello's records never change the result.
                assert_eq!(peek_client_hello(&data[..info.consumed], max), peek);
            }
            Peek::Incomplete { need } => {
                assert!(*need >= 1);
                assert!(data.is_empty() || data.len() + need <= max);
            }
            Peek::Invalid(_) => assert!(!data.is_empty()),
            Peek::NotTls => assert!(data.first() != Some(&0x16) || data.get(1) != Some(&3)),
        }
    }
});
