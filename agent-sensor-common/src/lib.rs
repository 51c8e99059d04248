//! Types shared by the eBPF programs and the daemon.
//!
//! Every record in the ring buffer starts with one [`EventHeader`]; `header.kind` says which
//! payload struct follows and `header.len` is the length of the whole record, including any
//! variable-length tail (strings) that the payload describes. All structs are `#[repr(C)]` with
//! explicit padding and compile-time size checks so that the kernel and user-space layouts can
//! never drift apart silently. User space must still check every length against the bytes it was
//! actually given: see `agent_sensor::events`.
#![no_std]

pub mod egress;
pub mod event;
pub mod kernel;
pub mod probe;
pub mod syscalls;

pub use event::*;
pub use kernel::*;

/// Asserts at compile time that a type has exactly the given size.
#[macro_export]
macro_rules! assert_size {
    ($t:ty, $size:expr) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
    };
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};

    use super::*;

    /// The decoder and the kernel agree on where every header field is: a reordering in one
    /// place without the other must fail here, not in production.
    #[test]
    fn header_layout_is_fixed() {
        assert_eq!(offset_of!(EventHeader, kind), 0);
        assert_eq!(offset_of!(EventHeader, len), 4);
        assert_eq!(offset_of!(EventHeader, ktime_ns), 8);
        assert_eq!(offset_of!(EventHeader, pid), 16);
        assert_eq!(offset_of!(EventHeader, tgid), 20);
        assert_eq!(offset_of!(EventHeader, cgroup_id), 40);
        assert_eq!(offset_of!(EventHeader, agent_id), 48);
        assert_eq!(offset_of!(EventHeader, comm), 56);
        assert_eq!(size_of::<EventHeader>() % 8, 0);
    }

    #[test]
    fn payloads_are_8_byte_multiples_so_tails_start_aligned() {
        for size in [
            size_of::<ForkEvent>(),
            size_of::<ExecEvent>(),
            size_of::<ExitEvent>(),
            size_of::<SyscallEvent>(),
            size_of::<FileEvent>(),
            size_of::<NetEvent>(),
        ] {
            assert_eq!(size % 8, 0, "{size}");
        }
    }

    #[test]
    fn kinds_round_trip_and_fit_the_drop_slots() {
        for kind in EventKind::ALL {
            assert_eq!(EventKind::from_u16(kind as u16), Some(kind));
            assert!((kind as u32) < drop_slot::FIRST_OTHER, "{kind:?}");
            assert_eq!(kind.slot(), kind as u32);
        }
        assert_eq!(EventKind::from_u16(0), None);
        assert_eq!(EventKind::from_u16(999), None);
    }

    #[test]
    fn syscall_table_is_consistent() {
        let table = syscalls::x86_64_table();
        for (i, (nr, spec)) in table.iter().enumerate() {
            assert!(*nr < syscalls::MAX_SYSCALL_NR);
            assert!(
                table[..i].iter().all(|(other, _)| other != nr),
                "duplicate {nr}"
            );
            if spec.family != syscalls::family::NONE {
                assert!(EventKind::from_u16(spec.kind).is_some(), "{nr}");
            }
            for index in [
                spec.path,
                spec.path2,
                spec.dirfd,
                spec.dirfd2,
                spec.fd,
                spec.flags,
                spec.mode,
                spec.arg,
                spec.arg2,
            ] {
                assert!(index < 6 || index == syscalls::NO_ARG, "{nr}: {index}");
            }
        }
    }

    #[test]
    fn compat_table_reads_every_call_as_one_the_sensor_handles() {
        let native = syscalls::x86_64_table();
        let mut slots = [(0, syscalls::CompatCall::default()); 123];
        let mut count = 0;
        for entry in syscalls::compat_slots() {
            slots[count] = entry;
            count += 1;
        }
        assert_eq!(count, slots.len());
        for (i, (slot, call)) in slots.iter().enumerate() {
            assert!(*slot < syscalls::COMPAT_SLOTS, "{slot}");
            assert_ne!(
                *slot,
                syscalls::I386_SOCKETCALL,
                "socketcall is read through its slots"
            );
            assert!(
                slots[..i].iter().all(|(other, _)| other != slot),
                "duplicate {slot}"
            );
            assert!((1..=6).contains(&call.args), "{slot}: {call:?}");
            let spec = native.iter().find(|(nr, _)| *nr == call.native as u32);
            let handled = spec.is_some_and(|(_, spec)| {
                spec.family != syscalls::family::NONE || spec.account != syscalls::account::NONE
            });
            assert!(handled, "{slot}: x86_64 {} is not recorded", call.native);
        }
        let calls = syscalls::socketcall_table();
        assert!(calls
            .iter()
            .all(|(call, _, _)| *call < syscalls::SOCKETCALL_CALLS));
        let own = syscalls::X32_FIRST_OWN..syscalls::X32_FIRST_OWN + syscalls::X32_OWN_CALLS;
        assert!(syscalls::x32_table()
            .iter()
            .all(|(nr, _, _)| own.contains(nr)));
    }
}
