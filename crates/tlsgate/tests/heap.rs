//! `tlsgate::heap`: once primed, buffers of the size an HTTP/2 tunnel frees and reallocates per
//! DATA frame are reused from the heap, not handed back to the kernel and page-faulted in again.
//! Alone in its test binary: the thresholds it sets are process-wide.

use std::hint::black_box;

/// A round of the data path's pattern: several ~100 KiB buffers alive at once, each written
/// through, then all freed.
fn churn() {
    let blocks: Vec<Vec<u8>> = (0..8).map(|i| vec![i as u8 + 1; 96 * 1024]).collect();
    black_box(&blocks);
}

/// This thread's minor page faults so far (`/proc/thread-self/stat`, field 10).
fn minor_faults() -> u64 {
    let stat =
        std::fs::read_to_string("/proc/thread-self/stat").expect("reading /proc/thread-self/stat");
    // The command name (field 2) is in parentheses and may hold spaces: count from after it.
    let after_comm = &stat[stat.rfind(')').expect("stat has a command name") + 2..];
    after_comm
        .split(' ')
        .nth(7)
        .and_then(|field| field.parse().ok())
        .expect("minflt field")
}

#[test]
fn freed_buffers_are_reused_without_page_faults() {
    tlsgate::heap::keep_freed_buffers();
    churn();
    let before = minor_faults();
    let rounds = 200;
    for _ in 0..rounds {
        churn();
    }
    let faults = minor_faults() - before;
    // Trimmed after every round, each round would fault in its 8 × 24 pages again: 38,400 here.
    assert!(
        faults < rounds,
        "{faults} minor page faults over {rounds} rounds of freeing and reallocating 768 KiB"
    );
}
