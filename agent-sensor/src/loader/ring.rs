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

/// The `EVENTS` ring, mapped and read as the module says.
pub struct EventRing {
    /// Holds the map's descriptor: what the run loop polls.
    map: MapData,
    /// The memory `reader` points into.
    _consumer: Mapping,
    _producer: Mapping,
    reader: Reader,
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
        // SAFETY: the consumer position opens the consumer page, the producer position the
        // producer page, and the data pages (mapped twice) follow it; all live as long as the
        // ring, which owns the mappings.
        let reader = unsafe {
            Reader::new(
                consumer.at,
                producer.at,
                producer.at.add(page),
                size as usize,
            )
        };
        Ok(Self {
            map,
            _consumer: consumer,
            _producer: producer,
            reader,
        })
    }

    /// The next record, or `None` once none is ready; it is lent until the next call.
    /// `Some(Err(_))` for a header the kernel cannot have written (everything up to the
    /// producer position is skipped: nothing after it can be found).
    pub fn next_record(&mut self) -> Option<Result<&[u8], CorruptRecord>> {
        self.reader.next_record()
    }

    /// Tells the kernel the records read so far may be overwritten. Call at the end of every
    /// pass: until then the ring's space stays taken, and the descriptor stays readable.
    pub fn release(&mut self) {
        self.reader.release()
    }
}

/// The reading itself, over the ring's memory wherever it is.
struct Reader {
    consumer_pos: *mut u8,
    producer_pos: *const u8,
    data: *const u8,
    mask: usize,
    /// Up to where this reader has read.
    read: usize,
    /// The consumer position the kernel was last told (`read` once a pass ends).
    published: usize,
    /// The producer position when this pass began: records up to it are complete or busy.
    available: usize,
}

impl Reader {
    /// # Safety
    /// `consumer_pos` and `producer_pos` point to 8-aligned positions, `data` to `size`
    /// bytes of records (a power of two) followed by the same bytes again, all valid for as
    /// long as the reader.
    unsafe fn new(
        consumer_pos: *mut u8,
        producer_pos: *const u8,
        data: *const u8,
        size: usize,
    ) -> Self {
        // A ring loaded from a pin, or read before, starts where the last reader stopped.
        let read = atomic_usize(consumer_pos).load(Ordering::Acquire);
        Self {
            consumer_pos,
            producer_pos,
            data,
            mask: size - 1,
            read,
            published: read,
            available: read,
        }
    }

    fn next_record(&mut self) -> Option<Result<&[u8], CorruptRecord>> {
        loop {
            if self.read == self.available {
                // Caught up with this pass: tell the kernel, then see whether more came.
                self.release();
                self.available = atomic_usize(self.producer_pos).load(Ordering::Acquire);
                if self.read == self.available {
                    return None;
                }
            }
            let offset = self.read & self.mask;
            // SAFETY: `offset` is below the ring's size, and the data is there twice over.
            let header_at = unsafe { self.data.add(offset) };
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
            // doubled data; the kernel does not reuse them before the consumer position passes
            // them, and it is published only by `&mut self` calls, after this borrow.
            let record = unsafe { std::slice::from_raw_parts(header_at.add(HEADER_BYTES), len) };
            return Some(Ok(record));
        }
    }

    fn release(&mut self) {
        if self.read != self.published {
            // Pairs with the kernel's acquire load before it reuses the space.
            atomic_usize(self.consumer_pos).store(self.read, Ordering::Release);
            self.published = self.read;
        }
    }
}

impl AsRawFd for EventRing {
    fn as_raw_fd(&self) -> RawFd {
        self.map.fd().as_fd().as_raw_fd()
    }
}

fn atomic_usize<'a>(at: *const u8) -> &'a AtomicUsize {
    // SAFETY: callers pass a position (`Reader::new`): 8-aligned, valid as long as the ring.
    unsafe { &*at.cast::<AtomicUsize>() }
}

fn atomic_u32<'a>(at: *const u8) -> &'a AtomicU32 {
    // SAFETY: callers pass a record header in the data: 8-aligned, valid as long as the ring.
    unsafe { &*at.cast::<AtomicU32>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 256;

    /// The ring's memory as the kernel lays it out: consumer position, producer position,
    /// then the data twice over. Leaked, and only touched through `base`, so that the
    /// reader's pointers into it stay valid while the test writes.
    struct FakeRing {
        base: *mut u8,
        /// Where the producer writes next.
        produced: usize,
    }

    impl FakeRing {
        fn new(start: usize) -> Self {
            let words: &'static mut [u64] = vec![0u64; 2 + 2 * SIZE / 8].leak();
            words[0] = start as u64;
            words[1] = start as u64;
            Self {
                base: words.as_mut_ptr().cast(),
                produced: start,
            }
        }

        fn reader(&self) -> Reader {
            // SAFETY: the layout `Reader::new` asks for, leaked: valid for ever.
            unsafe { Reader::new(self.base, self.base.add(8), self.base.add(16), SIZE) }
        }

        fn consumer_pos(&self) -> usize {
            // SAFETY: word 0 of the leaked words.
            unsafe { self.base.cast::<u64>().read() as usize }
        }

        /// Sets byte `at` of the data, in both copies.
        fn poke(&self, at: usize, byte: u8) {
            // SAFETY: `at % SIZE` is inside each copy of the data.
            unsafe {
                self.base.add(16 + at % SIZE).write(byte);
                self.base.add(16 + SIZE + at % SIZE).write(byte);
            }
        }

        fn peek(&self, at: usize) -> u8 {
            // SAFETY: as in `poke`.
            unsafe { self.base.add(16 + at % SIZE).read() }
        }

        /// Writes a record and moves the producer position.
        fn produce(&mut self, header_flags: u32, body: &[u8]) {
            let mut record = ((body.len() as u32) | header_flags).to_le_bytes().to_vec();
            record.extend_from_slice(&[0; 4]);
            record.extend_from_slice(body);
            record.resize(record.len().next_multiple_of(8), 0);
            for (i, b) in record.iter().enumerate() {
                self.poke(self.produced + i, *b);
            }
            self.produced += record.len();
            // SAFETY: word 1 of the leaked words.
            unsafe { self.base.cast::<u64>().add(1).write(self.produced as u64) };
        }
    }

    fn read_all(reader: &mut Reader) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Some(record) = reader.next_record() {
            out.push(record.expect("no corrupt record").to_vec());
        }
        out
    }

    #[test]
    fn records_come_in_order_discarded_ones_skipped_and_the_position_is_published_per_pass() {
        let mut ring = FakeRing::new(0);
        ring.produce(0, b"first");
        ring.produce(DISCARD_BIT, b"dropped");
        ring.produce(0, b"second record");
        let mut reader = ring.reader();
        let first = reader.next_record().unwrap().unwrap().to_vec();
        assert_eq!(first, b"first");
        // Read but not yet released: the kernel still counts the record as unread.
        assert_eq!(ring.consumer_pos(), 0);
        assert_eq!(read_all(&mut reader), vec![b"second record".to_vec()]);
        // Caught up: everything read is released, padding included.
        assert_eq!(ring.consumer_pos(), 16 + 16 + 24);
    }

    #[test]
    fn a_busy_record_ends_the_pass_and_is_read_once_committed() {
        let mut ring = FakeRing::new(0);
        ring.produce(0, b"done");
        ring.produce(BUSY_BIT, b"busy");
        let mut reader = ring.reader();
        assert_eq!(read_all(&mut reader), vec![b"done".to_vec()]);
        reader.release();
        assert_eq!(ring.consumer_pos(), 16);
        // The producer commits it: the busy bit goes.
        ring.poke(16 + 3, ring.peek(16 + 3) & !0x80);
        assert_eq!(read_all(&mut reader), vec![b"busy".to_vec()]);
    }

    #[test]
    fn a_record_that_wraps_around_the_end_is_read_whole() {
        // Its header is the ring's last 8 bytes; its body is at the start.
        let mut ring = FakeRing::new(SIZE - 8);
        ring.produce(0, b"straddles the end");
        let mut reader = ring.reader();
        assert_eq!(read_all(&mut reader), vec![b"straddles the end".to_vec()]);
        assert_eq!(ring.consumer_pos(), SIZE - 8 + 32);
    }

    #[test]
    fn an_impossible_length_skips_to_the_producer_position_instead_of_reading_past_the_ring() {
        let mut ring = FakeRing::new(0);
        ring.produce(0, b"ok");
        ring.produce(0, b"garbled");
        // The second header claims more than the ring holds.
        for (i, b) in (SIZE as u32 * 4).to_le_bytes().into_iter().enumerate() {
            ring.poke(16 + i, b);
        }
        ring.produce(0, b"after");
        let mut reader = ring.reader();
        assert_eq!(reader.next_record().unwrap().unwrap(), b"ok");
        let corrupt = reader.next_record().unwrap().unwrap_err();
        assert_eq!(corrupt.position, 16);
        assert_eq!(corrupt.skipped, ring.produced - 16);
        assert!(reader.next_record().is_none());
        assert_eq!(ring.consumer_pos(), ring.produced);
    }
}
