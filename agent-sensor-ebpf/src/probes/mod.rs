pub mod dns;
pub mod egress;
pub mod file;
pub mod net;
pub mod process;
pub mod process_calls;
pub mod sockets;
pub mod syscall;
