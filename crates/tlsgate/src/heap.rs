//! Keeping freed data-path buffers for reuse instead of handing them back to the kernel.
//!
//! A tunnel's HTTP/2 link frees and allocates a buffer of 64–130 KiB for about every DATA frame:
//! h2 splits each received frame off its read buffer, so the buffer is reallocated while the frame
//! is still held, and a stream's write staging (`h2io::H2Io`) is reallocated when it runs out of
//! room while h2 still holds chunks sent from it. glibc's defaults return the top of a heap to the kernel once 128 KiB of it is free, so
//! each of those buffers was unmapped when freed and page-faulted back in (zeroed) when allocated
//! again: a page fault per 4 KiB carried, on each end. In the 1 GiB benchmark (T1, docs/performance-log.md)
//! that was a third of the tunnel's CPU.
//!
//! glibc adjusts its thresholds itself ("dynamic mmap threshold", mallopt(3)): when a block that
//! was allocated with mmap is freed, the size above which blocks are mmapped becomes that block's
//! size, and the heap is trimmed only once twice that much is free at its top. [`keep_freed_buffers`]
//! frees one such block at startup, so the thresholds start where a busy tunnel would otherwise
//! take them only by chance. Allocators other than glibc's just allocate and free the block.

/// The freed block's size, and so the size below which buffers come from the heap; the heap keeps
/// up to twice this free at its top (per arena) before trimming. Eight times the data path's
/// buffers. 4 MiB (8 MiB kept per arena) left a few more faults out of T1 (3,983 against 20,491
/// per 1 GiB, 124,636 unprimed) but let the fault suite's RSS step up by arena high-water marks
/// after warm-up (+380 KiB over its second half, limit 256): freed memory that large is kept, not
/// returned, whenever a later round happens to peak higher.
pub const KEEP_BELOW: usize = 1 << 20;

/// Raises glibc's mmap and trim thresholds to [`KEEP_BELOW`] and twice that (see the module's
/// docs). Call once, early: the thresholds are process-wide.
pub fn keep_freed_buffers() {
    let block: Vec<u8> = Vec::with_capacity(KEEP_BELOW);
    // The block must really be allocated and freed: opaque to the optimiser.
    drop(std::hint::black_box(block));
}
