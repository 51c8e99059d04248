//! The daemon's reader of the event ring (`BPF_MAP_TYPE_RINGBUF`, mapped into its memory).
//!
//! It tells the kernel what it has read once per pass over the records waiting, not once per
//! record as aya's reader does. Every record a program reserves reads the consumer position; a
//! reader that writes it after each record keeps that cache line in its own core's cache, and
//! the tracked task on the other core waits for it at every record it writes (on the bench VM
//! the reservation took 9.7 % of a tracked open/close loop with the daemon reading, 4.0 % with
//! the daemon stopped). A record's bytes stay the reader's until the position passes them,
//! which is why a record is lent out only until the next call.
//!
//! The layout is the kernel's (`kernel/bpf/ringbuf.c`): one consumer page (read-write), then
//! one producer page and the data pages twice over (read-only), so a record that wraps around
//! the end is contiguous. A record is an 8-byte header (length with a busy and a discard bit,
//! page offset) and its bytes, padded to 8.

use std::{
    os::fd::{AsFd, AsRawFd, RawFd},
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
};

use aya::maps::{MapData, MapError};
use thiserror::Error;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_BYTES: usize = 8;

#[derive(Debug, Error)]
pub enum RingError {
    #[error("cannot read the ring's map info: {0}")]
    Info(#[source] MapError),
    #[error("the ring's size {0} is not a power of two of at least a page")]
    Size(u32),
    #[error("the EVENTS map is not a ring buffer (object and daemon out of sync)")]
    NotARing,
    #[error("cannot map the ring into memory: {0}")]
    Map(#[source] std::io::Error),
}

/// A record header the kernel cannot have written: its length runs past the ring.
#[derive(Debug, Error)]
#[error(
    "corrupt ring record header {header:#x} at position {position}: skipped {skipped} bytes \
     to the producer position"
)]
pub struct CorruptRecord {
    pub header: u32,
    pub position: usize,
    pub skipped: usize,
}

/// One memory mapping, unmapped on drop.
struct Mapping {
    at: *mut u8,
    len: usize,
}

impl Mapping {
    fn new(fd: RawFd, len: usize, prot: i32, offset: usize) -> Result<Self, RingError> {
        // SAFETY: a fresh shared mapping of the ring's own pages; checked below.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset as libc::off_t,
            )
        };
        if at == libc::MAP_FAILED {
            return Err(RingError::Map(std::io::Error::last_os_error()));
        }
        Ok(Self { at: at.cast(), len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        unsafe { libc::munmap(self.at.cast(), self.len) };
    }
}

pub struct EventRing {
    /// Holds the map's descriptor: what the run loop polls.
    map: MapData,
    consumer: Mapping,
    producer: Mapping,
    page: usize,
    mask: usize,
    /// Up to where this reader has read.
    read: usize,
    /// The consumer position the kernel was last told (`read` once a pass ends).
    published: usize,
    /// The producer position when this pass began: records up to it are complete or busy.
    available: usize,
}

// SAFETY: the mappings are owned by this value and only touched through `&mut self`.
unsafe impl Send for EventRing {}

impl EventRing {
    pub fn new(map: MapData) -> Result<Self, RingError> {
        let size = map.info().map_err(RingError::Info)?.max_entries();
        // SAFETY: plain sysconf.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        if !size.is_power_of_two() || (size as usize) < page {
            return Err(RingError::Size(size));
        }
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = Mapping::new(fd, page + 2 * size as usize, libc::PROT_READ, page)?;
        // A ring loaded from a pin, or read before, starts where the last reader stopped.
        let read = atomic_usize(consumer.at).load(Ordering::Acquire);
        Ok(Self {
            map,
            consumer,
            producer,
            page,
            mask: size as usize - 1,
            read,
            published: read,
            available: read,
        })
    }

    /// The next record, or `None` once none is ready; it is lent until the next call.
    /// `Some(Err(_))` for a header the kernel cannot have written (everything up to the
    /// producer position is skipped: nothing after it can be found).
    pub fn next_record(&mut self) -> Option<Result<&[u8], CorruptRecord>> {
        loop {
            if self.read == self.available {
                // Caught up with this pass: tell the kernel, then see whether more came.
                self.release();
                self.available = atomic_usize(self.producer.at).load(Ordering::Acquire);
                if self.read == self.available {
                    return None;
                }
            }
            let offset = self.read & self.mask;
            // SAFETY: `offset` is below the ring's size, and the data pages are mapped twice.
            let header_at = unsafe { self.producer.at.add(self.page + offset) };
            // Pairs with the kernel's committing xchg: the record's bytes are visible after.
            let header = atomic_u32(header_at).load(Ordering::Acquire);
            if header & BUSY_BIT != 0 {
                // Still being written: the next look finds it (its commit wakes the reader if
                // the reader flag asked for that).
                return None;
            }
            let len = (header & !(BUSY_BIT | DISCARD_BIT)) as usize;
            if len > self.mask + 1 - HEADER_BYTES {
                let skipped = self.available.wrapping_sub(self.read);
                let corrupt = CorruptRecord {
                    header,
                    position: self.read,
                    skipped,
                };
                self.read = self.available;
                return Some(Err(corrupt));
            }
            self.read += (HEADER_BYTES + len).next_multiple_of(8);
            if header & DISCARD_BIT != 0 {
                continue;
            }
            // SAFETY: header and record lie within the ring's size from `offset`, inside the
            // double mapping; the kernel does not reuse them before the consumer position
            // passes them, and it is published only by `&mut self` calls, after this borrow.
            let record = unsafe { std::slice::from_raw_parts(header_at.add(HEADER_BYTES), len) };
            return Some(Ok(record));
        }
    }

    /// Tells the kernel the records read so far may be overwritten. Call at the end of every
    /// pass: until then the ring's space stays taken, and the descriptor stays readable.
    pub fn release(&mut self) {
        if self.read != self.published {
            // Pairs with the kernel's acquire load before it reuses the space.
            atomic_usize(self.consumer.at).store(self.read, Ordering::Release);
            self.published = self.read;
        }
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

fn atomic_usize<'a>(at: *mut u8) -> &'a AtomicUsize {
    // SAFETY: callers pass the start of a mapped page, which is page-aligned and lives as
    // long as the ring.
    unsafe { &*at.cast::<AtomicUsize>() }
}

fn atomic_u32<'a>(at: *mut u8) -> &'a AtomicU32 {
    // SAFETY: callers pass a record header in the mapped data: 8-aligned, mapped for as
    // long as the ring.
    unsafe { &*at.cast::<AtomicU32>() }
}
