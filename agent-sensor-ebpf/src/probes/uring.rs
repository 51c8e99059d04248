//! io_uring requests. The kernel runs them without a syscall of their own (inline, in the
//! submitting process's io_uring worker threads, or its submission-polling thread, all threads
//! of the process), so the `sys_exit` hook never sees an open, rename or connect made this way.
//! They are recorded at the `io_uring_submit_req` tracepoint instead, as the syscall that does
//! the same (`nr`), marked `VIA_IO_URING`: after the kernel copied the request's paths
//! (`struct filename`) and before it runs it. So `ret` is 0, an open has no file yet to walk
//! (the daemon resolves its path as for a failed open), and nothing depends on a completion
//! the process can ask the kernel not to post (`IOSQE_CQE_SKIP_SUCCESS`).

use agent_sensor_common::{
    flags,
    syscalls::{family, nr},
    uring_op,
};
use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use super::{egress, file, net, syscall::spec};
use crate::{
    kernel::{read, read_ptr},
    maps::{off, CALL},
    tracking::hot_tracked,
};

#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn uring_submit_req(ctx: BtfTracePointContext) -> i32 {
    let _ = try_submit_req(&ctx);
    0
}

fn try_submit_req(ctx: &BtfTracePointContext) -> Option<()> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // The per-CPU decision `sys_exit` keeps: a submission comes inside a syscall of the
    // same process (or from its polling thread), and every io_uring request on the host
    // runs this.
    let agent = hot_tracked(tgid)?.agent;
    // `struct io_kiocb *`, read with `bpf_probe_read_kernel`: requests are rare beside
    // syscalls, and the per-operation structs laid over it are not its BTF members.
    let req: u64 = ctx.arg(0);
    let opcode: u8 = read(req, off!(uring.opcode))?;
    if opcode == uring_op::SOCKET {
        let args = [
            int(req, off!(uring.socket_domain)),
            int(req, off!(uring.socket_type)),
            int(req, off!(uring.socket_protocol)),
        ];
        return egress::unpoliced_socket(agent, args, 0, flags::VIA_IO_URING);
    }
    let (nr, args) = request_args(req, opcode)?;
    let spec = spec(nr as u64)?;
    let call = CALL.get_ptr_mut(0)?;
    // SAFETY: per-CPU scratch; nothing else runs on this CPU while we hold it.
    let c = unsafe { &mut *call };
    c.nr = nr;
    c.via = flags::VIA_IO_URING as u32;
    c.args = args;
    c.file = 0;
    c.dev = 0;
    c.ino = 0;
    c.killed = 0;
    c.repeats = 0;
    if spec.family == family::NET {
        net::record(c, spec.kind, agent, 0)
    } else {
        file::record(c, &spec, agent, 0)
    }
}

/// The `int` at `at` in request `req`, as a syscall argument (sign-extended); 0 if unreadable.
#[inline(always)]
fn int(req: u64, at: u64) -> u64 {
    read::<i32>(req, at).map_or(0, |v| v as i64 as u64)
}

/// The syscall that does what request `req` (operation `opcode`) asks, and its arguments as
/// that syscall takes them (paths as kernel addresses); `None` for operations not recorded.
#[inline(always)]
fn request_args(req: u64, opcode: u8) -> Option<(u32, [u64; 6])> {
    let field = |at: u64| int(req, at);
    let name = |at: u64| {
        read_ptr(req, at)
            .and_then(|filename| read_ptr(filename, off!(uring.filename_name)))
            .unwrap_or(0)
    };
    let args = match opcode {
        // openat(dfd, path, flags, mode); openat2's `open_how` is read into the same.
        uring_op::OPENAT | uring_op::OPENAT2 => {
            let how: [u64; 3] = read(req, off!(uring.open_how)).unwrap_or([0; 3]);
            let path = name(off!(uring.open_filename));
            (
                nr::OPENAT,
                [field(off!(uring.open_dfd)), path, how[0], how[1], 0, 0],
            )
        }
        // renameat2(olddfd, old, newdfd, new, flags)
        uring_op::RENAMEAT => (
            nr::RENAMEAT2,
            [
                field(off!(uring.rename_old_dfd)),
                name(off!(uring.rename_oldpath)),
                field(off!(uring.rename_new_dfd)),
                name(off!(uring.rename_newpath)),
                field(off!(uring.rename_flags)),
                0,
            ],
        ),
        // linkat(olddfd, old, newdfd, new, flags)
        uring_op::LINKAT => (
            nr::LINKAT,
            [
                field(off!(uring.link_old_dfd)),
                name(off!(uring.link_oldpath)),
                field(off!(uring.link_new_dfd)),
                name(off!(uring.link_newpath)),
                field(off!(uring.link_flags)),
                0,
            ],
        ),
        // symlinkat(target, newdfd, linkpath): io_link's old path is the target.
        uring_op::SYMLINKAT => (
            nr::SYMLINKAT,
            [
                name(off!(uring.link_oldpath)),
                field(off!(uring.link_new_dfd)),
                name(off!(uring.link_newpath)),
                0,
                0,
                0,
            ],
        ),
        // unlinkat(dfd, path, flags)
        uring_op::UNLINKAT => (
            nr::UNLINKAT,
            [
                field(off!(uring.unlink_dfd)),
                name(off!(uring.unlink_filename)),
                field(off!(uring.unlink_flags)),
                0,
                0,
                0,
            ],
        ),
        // mkdirat(dfd, path, mode)
        uring_op::MKDIRAT => {
            let mode: u16 = read(req, off!(uring.mkdir_mode)).unwrap_or(0);
            (
                nr::MKDIRAT,
                [
                    field(off!(uring.mkdir_dfd)),
                    name(off!(uring.mkdir_filename)),
                    mode as u64,
                    0,
                    0,
                    0,
                ],
            )
        }
        // sendmsg(fd, msg): the message header, its address and data are the process's.
        uring_op::SENDMSG | uring_op::SENDMSG_ZC => (
            nr::SENDMSG,
            [
                field(off!(uring.sqe_fd)),
                read::<u64>(req, off!(uring.sendmsg_msg)).unwrap_or(0),
                0,
                0,
                0,
                0,
            ],
        ),
        // sendto(fd, buf, len, flags, addr, addrlen): the data is the process's; a destination
        // was copied into the request when it was prepared (a kernel address, which
        // `net::record` reads as such).
        uring_op::SEND | uring_op::SEND_ZC if off!(uring.send_present) != 0 => {
            let msghdr = read_ptr(req, off!(uring.async_data)).unwrap_or(0);
            let (name, name_len) = if msghdr != 0 {
                (
                    read::<u64>(msghdr, off!(uring.send_name)).unwrap_or(0),
                    int(msghdr, off!(uring.send_namelen)),
                )
            } else {
                (0, 0)
            };
            (
                nr::SENDTO,
                [
                    field(off!(uring.sqe_fd)),
                    read::<u64>(req, off!(uring.sendmsg_msg)).unwrap_or(0),
                    field(off!(uring.send_len)),
                    0,
                    name,
                    name_len,
                ],
            )
        }
        // connect(fd, addr, addrlen): the address is still the process's.
        uring_op::CONNECT => (
            nr::CONNECT,
            [
                field(off!(uring.sqe_fd)),
                read::<u64>(req, off!(uring.connect_addr)).unwrap_or(0),
                field(off!(uring.connect_addr_len)),
                0,
                0,
                0,
            ],
        ),
        _ => return None,
    };
    Some(args)
}
