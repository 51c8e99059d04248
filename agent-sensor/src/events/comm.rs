//! [`Comm`]: a task's command name, kept inside the event.

use std::{fmt, ops::Deref};

/// The kernel's `TASK_COMM_LEN`: a comm is at most this long, NUL included when shorter.
const TASK_COMM_LEN: usize = 16;

/// A task's command name (`/proc/PID/comm`, at most 16 bytes). Held inline: every event
/// carries one, and as a `Vec` it was an allocation per event to make and, once the agent's
/// recent events let go of it, to free.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Comm {
    bytes: [u8; TASK_COMM_LEN],
    len: u8,
}

impl Comm {
    /// The bytes up to the first NUL, at most 16 of them (more are cut).
    pub fn new(bytes: &[u8]) -> Self {
        let end = bytes
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(bytes.len())
            .min(TASK_COMM_LEN);
        let mut comm = Self::default();
        comm.bytes[..end].copy_from_slice(&bytes[..end]);
        comm.len = end as u8;
        comm
    }
}

impl Deref for Comm {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comm_ends_at_its_nul_and_never_exceeds_the_kernels_length() {
        assert_eq!(&*Comm::new(b"git\0\0garbage"), b"git");
        assert_eq!(&*Comm::new(b"0123456789abcdef"), b"0123456789abcdef");
        assert_eq!(&*Comm::new(b"0123456789abcdefXYZ"), b"0123456789abcdef");
        assert!(Comm::new(b"").is_empty());
        assert_eq!(format!("{:?}", Comm::new(b"a\"b")), r#""a\"b""#);
    }
}
