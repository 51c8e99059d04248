//! The sensor's eBPF programs. Naming: `<family>_<hook>`; every program body is a `try_` function
//! whose error only means "nothing to report", and every record the kernel cannot deliver is
//! counted in `DROPS`.
#![no_std]
#![no_main]
// For the one BPF atomic add in `probes::sockets` (the eBPF build runs with RUSTC_BOOTSTRAP=1).
#![feature(asm_experimental_arch)]

mod emit;
mod kernel;
mod maps;
mod probes;
mod repeats;
mod tracking;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
