//! The global allocator: power-of-two size classes up to a page, each with a
//! free list, carved from 64 KiB chunks of anonymous memory; larger blocks are
//! mappings of their own, returned to the kernel when freed. Hand-written as
//! the allocator crates for `no_std` either need the C library or a locked,
//! fixed arena; the supervisor is single-threaded and mostly idle.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

use crate::sys;

const PAGE: usize = 4096;
const CHUNK: usize = 64 * 1024;
/// Block sizes 16, 32, ..., 4096.
const CLASSES: usize = 9;
const SMALLEST_SHIFT: u32 = 4;

struct FreeBlock {
    next: *mut FreeBlock,
}

struct State {
    free: [*mut FreeBlock; CLASSES],
    /// The unused rest of the current chunk.
    next: usize,
    end: usize,
}

pub struct Heap(UnsafeCell<State>);

// SAFETY: the supervisor runs one thread; a forked child only makes system calls.
unsafe impl Sync for Heap {}

impl Heap {
    pub const fn new() -> Heap {
        Heap(UnsafeCell::new(State {
            free: [ptr::null_mut(); CLASSES],
            next: 0,
            end: 0,
        }))
    }
}

/// The size class of a layout; None for blocks larger than a page.
fn class(layout: Layout) -> Option<usize> {
    let size = layout.size().max(layout.align()).max(1 << SMALLEST_SHIFT);
    if size > PAGE {
        return None;
    }
    let rounded = size.next_power_of_two();
    Some((rounded.trailing_zeros() - SMALLEST_SHIFT) as usize)
}

fn class_size(class: usize) -> usize {
    1 << (class as u32 + SMALLEST_SHIFT)
}

fn pages(size: usize) -> usize {
    size.div_ceil(PAGE) * PAGE
}

impl State {
    fn carve(&mut self, size: usize) -> *mut u8 {
        let mut start = self.next.next_multiple_of(size);
        if start + size > self.end {
            let Some(chunk) = sys::map_memory(CHUNK) else {
                return ptr::null_mut();
            };
            self.next = chunk as usize;
            self.end = self.next + CHUNK;
            start = self.next;
        }
        self.next = start + size;
        start as *mut u8
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() > PAGE {
            return ptr::null_mut();
        }
        // SAFETY: single-threaded (see the Sync impl); no reference outlives this call.
        let state = unsafe { &mut *self.0.get() };
        match class(layout) {
            Some(class) => {
                let head = state.free[class];
                if head.is_null() {
                    state.carve(class_size(class))
                } else {
                    // SAFETY: free-list entries are blocks of this class we handed out.
                    state.free[class] = unsafe { (*head).next };
                    head.cast()
                }
            }
            None => sys::map_memory(pages(layout.size())).unwrap_or(ptr::null_mut()),
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        // SAFETY: as in alloc.
        let state = unsafe { &mut *self.0.get() };
        match class(layout) {
            Some(class) => {
                let block = block.cast::<FreeBlock>();
                // SAFETY: the block is ours again, at least 16 bytes and aligned.
                unsafe {
                    block.write(FreeBlock {
                        next: state.free[class],
                    })
                };
                state.free[class] = block;
            }
            // SAFETY: large blocks are whole mappings of this size.
            None => unsafe { sys::unmap_memory(block, pages(layout.size())) },
        }
    }
}
