//! Data-path buffers kept per thread between uses.
//!
//! A tunnel holds its copy buffers (the splice's, the outer TLS layer's) only while bytes are in
//! flight, so an idle connection costs no buffer (M1 in docs/performance.md). Freed to the
//! allocator, that meant a 64 KiB allocation and free for every request and direction on a
//! keep-alive tunnel: 14 calls into the allocator per request through the `tls` transport, edge
//! and relay together, all of them these buffers (`bench/run.sh --allocs`). Instead a buffer that
//! falls empty goes back to a small stack kept by the thread, and the next one needed comes from
//! there. The stack is bounded ([`KEEP`]), so what a thread holds for reuse does not grow with its
//! connections; a buffer given back to a full stack is freed as before.
//!
//! Per thread, not shared: no lock on the data path, and with per-core workers
//! ([`crate::workers`]) a connection and its buffers stay on one thread.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// Room a kept buffer has at least: the splice's read size and the outer layer's read chunk.
pub const SIZE: usize = 64 * 1024;
/// Largest buffer kept: one grown further (a large handshake flight, a long queue of records) is
/// freed, so the stack holds at most `KEEP` × `MAX_KEPT` bytes.
const MAX_KEPT: usize = 4 * SIZE;
/// Buffers kept per thread: 512 KiB at [`SIZE`]. A request on a keep-alive tunnel holds one or two
/// per end at once and gives them back before its task sleeps, so a few serve a whole worker.
pub const KEEP: usize = 8;

thread_local! {
    static KEPT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for at least [`SIZE`] bytes: one this thread kept, else a new one.
pub fn take() -> BytesMut {
    // `try_with`: a thread being torn down has no stack any more, and allocates instead.
    KEPT.try_with(|kept| kept.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| BytesMut::with_capacity(SIZE))
}

/// Makes room for `n` more bytes in `buf`, starting from a kept buffer ([`take`]) when it has none:
/// how the data path's buffers are filled.
pub fn reserve(buf: &mut BytesMut, n: usize) {
    if buf.capacity() == 0 {
        *buf = take();
    }
    buf.reserve(n);
}

/// Gives back a buffer that holds no bytes, leaving `buf` without room: this thread keeps it for
/// reuse, or frees it when the thread keeps enough already or its room is not the usual size. A
/// buffer that still holds bytes is left as it is.
pub fn give(buf: &mut BytesMut) {
    if !buf.is_empty() {
        return;
    }
    let mut buf = std::mem::take(buf);
    // A buffer emptied by advancing past what was written has its room behind it: reclaim that
    // (no copy: nothing is left to move), or free a buffer that cannot have it back.
    if !buf.try_reclaim(SIZE) || buf.capacity() > MAX_KEPT {
        return;
    }
    // A thread being torn down frees the buffer instead.
    let _ = KEPT.try_with(|kept| {
        let mut kept = kept.borrow_mut();
        if kept.len() < KEEP {
            kept.push(buf);
        }
    });
}

/// The bytes in `buf` as [`Bytes`] for a reader that keeps them a while (h2, until it has written
/// them out), without copying. The buffer goes back to the kept buffers ([`give`]) of the thread
/// that drops the last of them, instead of to the allocator. Before, such a buffer was frozen and
/// freed once written, and the next read needed a new 64 KiB one; with the split that froze it,
/// two allocations per chunk (4.3 allocator calls per T3 h2 request, edge and relay together,
/// against 2.4 now: `bench/run.sh --allocs`). Now a chunk costs one small allocation (the shared
/// owner) and the big buffer is reused.
pub fn share(buf: BytesMut) -> Bytes {
    Bytes::from_owner(Kept(buf))
}

/// A buffer shared as [`Bytes`] ([`share`]); given back when the last of them is dropped.
struct Kept(BytesMut);

impl AsRef<[u8]> for Kept {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        self.0.clear();
        give(&mut self.0);
    }
}

/// Buffers this thread keeps now.
#[cfg(test)]
pub fn kept() -> usize {
    KEPT.with(|kept| kept.borrow().len())
}

/// Frees what this thread keeps: a test's starting point, whatever ran on its thread before.
#[cfg(test)]
pub fn clear() {
    KEPT.with(|kept| kept.borrow_mut().clear());
}

#[cfg(test)]
mod tests {
    use bytes::Buf;

    use super::*;

    #[test]
    fn a_buffer_given_back_is_the_next_one_taken() {
        clear();
        let mut buf = take();
        assert!(buf.capacity() >= SIZE);
        buf.extend_from_slice(b"request");
        let at = buf.as_ptr();
        buf.clear();
        give(&mut buf);
        assert_eq!(buf.capacity(), 0, "the giver keeps no room");
        assert_eq!(kept(), 1);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the same allocation, not a new one");
        assert!(again.is_empty());
        assert_eq!(kept(), 0);
    }

    #[test]
    fn a_buffer_written_out_is_kept_with_all_its_room() {
        clear();
        let mut buf = take();
        let room = buf.capacity();
        buf.extend_from_slice(&[7; 1500]);
        buf.advance(1500);
        assert!(buf.capacity() < SIZE, "advancing leaves the room behind");
        give(&mut buf);
        assert_eq!(take().capacity(), room);
    }

    #[test]
    fn only_empty_buffers_of_the_usual_size_are_kept() {
        clear();
        let mut holding = take();
        holding.extend_from_slice(b"still in flight");
        give(&mut holding);
        assert_eq!(
            &holding[..],
            b"still in flight",
            "bytes in flight stay where they are"
        );
        let mut small = BytesMut::with_capacity(512);
        give(&mut small);
        let mut huge = BytesMut::with_capacity(MAX_KEPT + 1);
        give(&mut huge);
        assert_eq!(kept(), 0);
    }

    #[test]
    fn a_shared_buffer_comes_back_when_the_last_of_its_bytes_is_dropped() {
        clear();
        let mut buf = take();
        buf.extend_from_slice(b"a DATA frame's payload");
        let at = buf.as_ptr();
        let shared = share(buf);
        assert_eq!(&shared[..], b"a DATA frame's payload");
        assert_eq!(shared.as_ptr(), at, "shared without a copy");
        let (mut head, tail) = (shared.clone(), shared);
        head.truncate(6);
        drop(tail);
        assert_eq!(kept(), 0, "still in use by one of them");
        assert_eq!(&head[..], b"a DATA");
        drop(head);
        assert_eq!(kept(), 1);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the same allocation, emptied");
        assert!(again.is_empty() && again.capacity() >= SIZE);
    }

    #[test]
    fn a_thread_keeps_at_most_keep_buffers() {
        clear();
        let mut all: Vec<BytesMut> = (0..KEEP + 3).map(|_| take()).collect();
        for buf in &mut all {
            give(buf);
        }
        assert_eq!(kept(), KEEP);
        std::thread::spawn(|| assert_eq!(kept(), 0, "another thread's stack is its own"))
            .join()
            .unwrap();
    }
}
