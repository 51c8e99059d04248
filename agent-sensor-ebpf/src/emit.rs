//! Composing records in the per-CPU scratch buffer and sending them through the ring.

use agent_sensor_common::{
    drop_slot, flags, EventHeader, COMM_LEN, MAX_EVENT_BYTES, MAX_KERNEL_PATH, MAX_USER_PATH,
};
use aya_ebpf::helpers::{
    bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
    generated::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_ktime_get_ns,
        bpf_probe_read_kernel_str, bpf_probe_read_user_str,
    },
};

use crate::{
    kernel::{parent_tgid, walk_path},
    maps::{count_drop, Scratch, EVENTS, RING_READER_WAITING, SCRATCH},
};

/// `BPF_RB_NO_WAKEUP` and `BPF_RB_FORCE_WAKEUP`.
const NO_WAKEUP: u64 = 1;
const FORCE_WAKEUP: u64 = 2;

/// Offset mask that keeps every write inside the scratch buffer.
pub const OFFSET_MASK: u64 = MAX_EVENT_BYTES as u64 - 1;

/// A record being composed in the per-CPU scratch map. Its length is kept in the map (see
/// `maps::Scratch` for why).
pub struct Record {
    scratch: *mut Scratch,
}

impl Record {
    /// Starts a record of `kind` for the current task, header filled, payload `P` zeroed.
    #[inline(always)]
    pub fn start<P>(kind: u16, agent_id: u64, flags: u16) -> Option<(Record, *mut P)> {
        let scratch = SCRATCH.get_ptr_mut(0)?;
        // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
        let buf = unsafe { (*scratch).buf.as_mut_ptr() };
        let header = buf.cast::<EventHeader>();
        // Field by field, each helper's result stored at once: a struct literal kept them all
        // live across the calls, spilled to the stack of every program that records (the
        // 512-byte stack `sys_exit` and its subprograms share).
        // SAFETY: the buffer is larger than header + any payload; the buffer is 8-aligned (it
        // follows two u64 fields in an 8-aligned map value), as is the header. Plain helper
        // calls; `comm` is 16 bytes in the header.
        unsafe {
            (*header).kind = kind;
            (*header).flags = flags;
            (*header).len = 0;
            (*header).ktime_ns = bpf_ktime_get_ns();
            let pid_tgid = bpf_get_current_pid_tgid();
            (*header).pid = pid_tgid as u32;
            (*header).tgid = (pid_tgid >> 32) as u32;
            (*header).ppid = parent_tgid();
            let uid_gid = bpf_get_current_uid_gid();
            (*header).uid = uid_gid as u32;
            (*header).gid = (uid_gid >> 32) as u32;
            (*header)._pad0 = 0;
            (*header).cgroup_id = bpf_get_current_cgroup_id();
            (*header).agent_id = agent_id;
            let comm = core::ptr::addr_of_mut!((*header).comm);
            if bpf_get_current_comm(comm.cast(), COMM_LEN as u32) != 0 {
                // Word by word: `*comm = [0; 16]` may become a call to aya-ebpf's memset,
                // which returns nothing while LLVM may read its result as the destination
                // (the verifier then refuses the program: "R0 !read_ok").
                const { assert!(COMM_LEN == 16 && core::mem::offset_of!(EventHeader, comm) % 8 == 0) };
                let words = comm.cast::<u64>();
                words.write_volatile(0);
                words.add(1).write_volatile(0);
            }
        }
        let payload_at = core::mem::size_of::<EventHeader>();
        // Zeroing keeps padding from leaking kernel bytes. Word by word: `write_bytes` became
        // a call to the linker's memset, a byte loop (2 % of a tracked open/close loop).
        const { assert!(core::mem::size_of::<P>() % 8 == 0) };
        // SAFETY: in bounds as above; the payload follows the 72-byte header, so 8-aligned.
        let payload = unsafe {
            let payload = buf.add(payload_at);
            let words = payload.cast::<u64>();
            for i in 0..core::mem::size_of::<P>() / 8 {
                words.add(i).write_volatile(0);
            }
            payload.cast::<P>()
        };
        let record = Record { scratch };
        record.set_len((payload_at + core::mem::size_of::<P>()) as u64);
        Some((record, payload))
    }

    #[inline(always)]
    fn len(&self) -> u64 {
        // SAFETY: `scratch` is the per-CPU map value this record owns.
        unsafe { core::ptr::addr_of!((*self.scratch).len).read_volatile() & OFFSET_MASK }
    }

    #[inline(always)]
    fn set_len(&self, len: u64) {
        // SAFETY: as above.
        unsafe { core::ptr::addr_of_mut!((*self.scratch).len).write_volatile(len) };
    }

    #[inline(always)]
    fn buf(&self) -> *mut u8 {
        // SAFETY: as above.
        unsafe { (*self.scratch).buf.as_mut_ptr() }
    }

    /// Where the next tail bytes go; always inside the scratch buffer.
    #[inline(always)]
    pub fn tail(&self) -> *mut u8 {
        // SAFETY: masked offset into a buffer twice MAX_EVENT_BYTES long.
        unsafe { self.buf().add(self.len() as usize) }
    }

    /// Counts `n` more bytes written at [`Record::tail`].
    #[inline(always)]
    pub fn grow(&self, n: u64) {
        self.set_len(self.len() + n);
    }

    #[inline(always)]
    fn header(&self) -> *mut EventHeader {
        self.buf().cast()
    }

    #[inline(always)]
    pub fn add_flags(&self, flags: u16) {
        // SAFETY: the header is at the start of the buffer.
        unsafe { (*self.header()).flags |= flags };
    }

    /// Appends the encoded walk of the `struct path` at `path`; returns its length.
    #[inline(always)]
    pub fn append_walk(&self, path: u64) -> u16 {
        self.append_written(|dst| walk_path(path, dst))
    }

    /// Appends the NUL-terminated string at user address `src` (0: none), cut to
    /// `MAX_USER_PATH - 1` bytes with the `TRUNCATED` flag; returns its length.
    #[inline(always)]
    pub fn append_user_str(&self, src: u64) -> u16 {
        self.append_written(|dst| read_str(src, dst, false))
    }

    /// [`Record::append_user_str`] for a string at user address `src`, or at kernel address
    /// `src` when `kernel`.
    #[inline(always)]
    pub fn append_str(&self, src: u64, kernel: bool) -> u16 {
        self.append_written(|dst| read_str(src, dst, kernel))
    }

    /// Appends what `write` puts at the tail (at most `MAX_KERNEL_PATH - 1` bytes, with
    /// `MAX_COMPONENT` bytes of slack past them); it returns the bytes written and the header
    /// flags they call for. Returns the bytes appended.
    #[inline(always)]
    pub fn append_written(&self, write: impl FnOnce(*mut u8) -> (u16, u16)) -> u16 {
        let (len, flags) = write(self.tail());
        self.add_flags(flags);
        let len = len as u64 & (MAX_KERNEL_PATH as u64 - 1);
        self.grow(len);
        len as u16
    }

    /// Sends the record; a full ring is counted per kind, never silent.
    #[inline(always)]
    pub fn submit(self) {
        let len = self.len();
        // SAFETY: the header is at the start of the buffer.
        let kind = unsafe {
            (*self.header()).len = len as u32;
            (*self.header()).kind
        };
        // SAFETY: `len` is masked below the buffer size.
        let data = unsafe { core::slice::from_raw_parts(self.buf(), len as usize) };
        if EVENTS.output::<[u8]>(data, NO_WAKEUP).is_err() {
            count_drop(kind as u32 % drop_slot::FIRST_OTHER);
        }
        wake_reader();
    }
}

/// Copies a user (or, when `kernel`, a kernel) string into `dst` (MAX_USER_PATH bytes);
/// returns its length without the NUL and the header flags it calls for (truncation).
#[inline(always)]
fn read_str(src: u64, dst: *mut u8, kernel: bool) -> (u16, u16) {
    if src == 0 {
        return (0, 0);
    }
    // SAFETY: `dst` has MAX_USER_PATH bytes; the helpers check the source address.
    let copied = unsafe {
        if kernel {
            bpf_probe_read_kernel_str(dst.cast(), MAX_USER_PATH as u32, src as *const _)
        } else {
            bpf_probe_read_user_str(dst.cast(), MAX_USER_PATH as u32, src as *const _)
        }
    };
    if copied <= 0 {
        return (0, 0);
    }
    let flags = if copied as usize == MAX_USER_PATH {
        flags::TRUNCATED
    } else {
        0
    };
    (
        ((copied as u64 - 1) & (MAX_USER_PATH as u64 - 1)) as u16,
        flags,
    )
}

/// Wakes the daemon if it waits on the ring. Read after the record is committed (the commit is
/// a full barrier): the daemon sets the flag before its last look at the ring, so either that
/// look sees the record or this read sees the flag — no record is left without a wake-up.
#[inline(always)]
fn wake_reader() {
    let Some(waiting) = RING_READER_WAITING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: pointer into an array map value; a racing CPU can at worst wake the daemon twice.
    if unsafe { core::ptr::read_volatile(waiting) } == 0 {
        return;
    }
    // The wake-up rides on an 8-byte record that is discarded (the reader skips it); with the
    // ring full there is data to read already, and the flag stays for the next record.
    if let Some(entry) = EVENTS.reserve::<u64>(0) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(waiting, 0) };
        entry.discard(FORCE_WAKEUP);
    }
}
