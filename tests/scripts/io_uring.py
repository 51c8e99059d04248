#!/usr/bin/env python3
"""Drive Linux io_uring through raw syscalls (x86_64), standard library only.

usage: io_uring.py [--skip-success] [--sqpoll] OP ARGS... [OP ARGS...]
  openat PATH FLAGS | openat2 PATH FLAGS | close FD | unlinkat PATH | rmdirat PATH
  mkdirat PATH | renameat OLD NEW | symlinkat TARGET LINKPATH | linkat OLD NEW
  socket DOMAIN TYPE PROTOCOL | connect FD IP PORT | sendmsg FD IP PORT DATA
  send FD IP PORT DATA (IORING_OP_SEND with a destination) | sendc FD DATA (connected)
A send's DATA may be hex:HEXDIGITS for bytes a command line cannot hold.
Integers accept 0x/0o prefixes; an FD/integer may be 'last' (res of the previous
op) or '@N' (res of op number N, 0-based). Each op is one SQE + one io_uring_enter;
one JSON line is printed per op: {"op": NAME, "res": cqe.res or null}.
"""
import ctypes, errno, json, mmap, os, socket, struct, sys, time

NR_IO_URING_SETUP, NR_IO_URING_ENTER = 425, 426
# enum io_uring_op (include/uapi/linux/io_uring.h)
OPCODE = {"sendmsg": 9, "connect": 16, "openat": 18, "close": 19, "send": 26, "sendc": 26,
          "openat2": 28, "renameat": 35, "unlinkat": 36, "rmdirat": 36, "mkdirat": 37,
          "symlinkat": 38, "linkat": 39, "socket": 45}
NARGS = {"sendmsg": 4, "connect": 3, "openat": 2, "close": 1, "send": 4, "sendc": 2,
         "openat2": 2, "renameat": 2, "unlinkat": 1, "rmdirat": 1, "mkdirat": 1,
         "symlinkat": 2, "linkat": 2, "socket": 3}
AT_FDCWD, AT_REMOVEDIR = -100, 0x200
O_CREAT, O_TMPFILE = 0o100, 0o20200000
IOSQE_CQE_SKIP_SUCCESS = 1 << 6
IORING_SETUP_SQPOLL = 1 << 1
IORING_FEAT_SINGLE_MMAP = 1 << 0
IORING_SQ_NEED_WAKEUP = 1 << 0
IORING_ENTER_GETEVENTS, IORING_ENTER_SQ_WAKEUP = 1 << 0, 1 << 1
IORING_OFF_SQ_RING, IORING_OFF_CQ_RING, IORING_OFF_SQES = 0, 0x8000000, 0x10000000

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
_mtx = ctypes.create_string_buffer(64)  # all-zero pthread_mutex_t == PTHREAD_MUTEX_INITIALIZER


def mb():
    """Full memory barrier (glibc mutex lock/unlock execute LOCK-prefixed insns)."""
    libc.pthread_mutex_lock(_mtx)
    libc.pthread_mutex_unlock(_mtx)


def syscall(*args):
    while True:
        r = libc.syscall(*[ctypes.c_long(a) for a in args])
        if r >= 0:
            return r
        e = ctypes.get_errno()
        if e != errno.EINTR:
            raise OSError(e, os.strerror(e))


def get32(m, off):
    return struct.unpack_from("<I", m, off)[0]


def put32(m, off, v):
    struct.pack_into("<I", m, off, v & 0xFFFFFFFF)


class Ring:
    def __init__(self, sqpoll=False, entries=8):
        p = ctypes.create_string_buffer(120)  # struct io_uring_params
        if sqpoll:
            struct.pack_into("<I", p, 8, IORING_SETUP_SQPOLL)  # .flags
            struct.pack_into("<I", p, 16, 2000)                # .sq_thread_idle (ms)
        self.fd = syscall(NR_IO_URING_SETUP, entries, ctypes.addressof(p))
        sq_entries, cq_entries = struct.unpack_from("<2I", p, 0)
        features = struct.unpack_from("<I", p, 20)[0]
        # sq_off @40: head tail ring_mask ring_entries flags dropped array resv1 (+u64)
        self.sq = struct.unpack_from("<8I", p, 40)
        # cq_off @80: head tail ring_mask ring_entries overflow cqes flags resv1 (+u64)
        self.cq = struct.unpack_from("<8I", p, 80)
        sq_size = self.sq[6] + sq_entries * 4
        cq_size = self.cq[5] + cq_entries * 16

        def mm(size, off):
            return mmap.mmap(self.fd, size, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE, offset=off)
        if features & IORING_FEAT_SINGLE_MMAP:  # SQ and CQ rings share one mapping
            self.sqm = self.cqm = mm(max(sq_size, cq_size), IORING_OFF_SQ_RING)
        else:
            self.sqm, self.cqm = mm(sq_size, IORING_OFF_SQ_RING), mm(cq_size, IORING_OFF_CQ_RING)
        self.sqes = mm(sq_entries * 64, IORING_OFF_SQES)
        self.sq_mask, self.cq_mask = get32(self.sqm, self.sq[2]), get32(self.cqm, self.cq[2])
        self.sqpoll = sqpoll

    def push(self, opcode, flags=0, fd=0, off=0, addr=0, length=0, op_flags=0, user_data=0,
             addr_len=0):
        """Write one SQE (64 bytes) and publish it by bumping the SQ tail."""
        tail = get32(self.sqm, self.sq[1])
        idx = tail & self.sq_mask
        # opcode u8, flags u8, ioprio u16, fd s32, off/addr2 u64, addr u64, len u32,
        # op_flags u32 (open_flags/rename_flags/...), user_data u64, buf_index u16,
        # personality u16, addr_len u16 (a send's destination), 18 bytes zero
        struct.pack_into("<BBHiQQIIQHHH18x", self.sqes, idx * 64, opcode, flags, 0, fd,
                         off, addr, length & 0xFFFFFFFF, op_flags & 0xFFFFFFFF, user_data,
                         0, 0, addr_len)
        put32(self.sqm, self.sq[6] + idx * 4, idx)  # sq array slot -> sqe index
        mb()                                        # SQE visible before tail (release)
        put32(self.sqm, self.sq[1], tail + 1)
        mb()                                        # tail store before SQ flags load

    def enter(self, to_submit, min_complete, flags):
        if self.sqpoll and get32(self.sqm, self.sq[4]) & IORING_SQ_NEED_WAKEUP:
            flags |= IORING_ENTER_SQ_WAKEUP         # poller thread is asleep: wake it
        return syscall(NR_IO_URING_ENTER, self.fd, to_submit, min_complete, flags, 0, 0)

    def reap(self):
        """Drain all available CQEs -> {user_data: res}."""
        out = {}
        head, tail = get32(self.cqm, self.cq[0]), get32(self.cqm, self.cq[1])
        mb()                                        # read tail before CQEs (acquire)
        while head != tail:
            ud, res, _ = struct.unpack_from("<QiI", self.cqm, self.cq[5] + (head & self.cq_mask) * 16)
            out[ud] = res
            head = (head + 1) & 0xFFFFFFFF
        mb()
        put32(self.cqm, self.cq[0], head)           # hand the slots back
        return out


def build(name, a, num, keep):
    """Map an op + its args to SQE fields (see io_uring/{openclose,fs,net}.c *_prep)."""
    def ptr(data):  # NUL-terminated buffer kept alive in `keep` until the CQE
        b = ctypes.create_string_buffer(data)
        keep.append(b)
        return ctypes.addressof(b)
    path = lambda s: ptr(os.fsencode(s))
    payload = lambda s: bytes.fromhex(s[4:]) if s.startswith("hex:") else os.fsencode(s)
    if name == "openat":   # fd=dfd addr=path len=mode open_flags=flags
        return dict(fd=AT_FDCWD, addr=path(a[0]), length=0o644, op_flags=num(a[1]))
    if name == "openat2":  # fd=dfd addr=path addr2=&open_how len=sizeof(open_how)
        flags = num(a[1])
        mode = 0o644 if flags & (O_CREAT | O_TMPFILE) else 0  # openat2 rejects stray mode
        return dict(fd=AT_FDCWD, addr=path(a[0]), off=ptr(struct.pack("<QQQ", flags, mode, 0)), length=24)
    if name == "close":    # fd=fd, everything else zero
        return dict(fd=num(a[0]))
    if name in ("unlinkat", "rmdirat"):  # fd=dfd addr=path unlink_flags
        return dict(fd=AT_FDCWD, addr=path(a[0]), op_flags=AT_REMOVEDIR if name == "rmdirat" else 0)
    if name == "mkdirat":  # fd=dfd addr=path len=mode
        return dict(fd=AT_FDCWD, addr=path(a[0]), length=0o755)
    if name in ("renameat", "linkat"):  # fd=olddfd addr=old addr2=new len=newdfd
        return dict(fd=AT_FDCWD, addr=path(a[0]), off=path(a[1]), length=AT_FDCWD)
    if name == "symlinkat":  # fd=newdfd addr=target addr2=linkpath
        return dict(fd=AT_FDCWD, addr=path(a[0]), off=path(a[1]))
    if name == "socket":   # fd=domain off=type len=protocol
        return dict(fd=num(a[0]), off=num(a[1]), length=num(a[2]))
    if name == "connect":  # fd=sockfd addr=&sockaddr_in addr2=addrlen
        sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", num(a[2])) \
            + socket.inet_aton(a[1]) + bytes(8)
        return dict(fd=num(a[0]), addr=ptr(sa), off=len(sa))
    if name == "send":  # fd=sockfd addr=DATA len=its length addr2=&sockaddr_in addr_len
        sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", num(a[2])) \
            + socket.inet_aton(a[1]) + bytes(8)
        data = payload(a[3])
        return dict(fd=num(a[0]), addr=ptr(data), length=len(data), off=ptr(sa), addr_len=len(sa))
    if name == "sendc":  # fd=sockfd addr=DATA len=its length (a connected socket)
        data = payload(a[1])
        return dict(fd=num(a[0]), addr=ptr(data), length=len(data))
    if name == "sendmsg":  # fd=sockfd addr=&msghdr{name=&sockaddr_in, iov=[DATA]} len=1
        sa = struct.pack("<H", socket.AF_INET) + struct.pack(">H", num(a[2])) \
            + socket.inet_aton(a[1]) + bytes(8)
        data = os.fsencode(a[3])
        iov = struct.pack("<QQ", ptr(data), len(data))
        # msg_name, msg_namelen (+pad), msg_iov, msg_iovlen, msg_control, msg_controllen,
        # msg_flags (+pad)
        msg = struct.pack("<QI4xQQQQi4x", ptr(sa), len(sa), ptr(iov), 1, 0, 0, 0)
        return dict(fd=num(a[0]), addr=ptr(msg), length=1)
    raise ValueError(name)


def main(argv):
    skip = sqpoll = False
    while argv and argv[0].startswith("--"):
        opt = argv.pop(0)
        if opt == "--skip-success":
            skip = True
        elif opt == "--sqpoll":
            sqpoll = True
        else:
            sys.exit(f"unknown option {opt}\n{__doc__}")
    ops = []
    while argv:
        name = argv.pop(0)
        if name not in NARGS or len(argv) < NARGS[name]:
            sys.exit(f"bad op or missing args: {name}\n{__doc__}")
        ops.append((name, argv[:NARGS[name]]))
        del argv[:NARGS[name]]
    if not ops:
        sys.exit(__doc__)

    results = []

    def num(s):
        if s == "last" or s.startswith("@"):
            v = results[-1] if s == "last" else results[int(s[1:])]
            if v is None:
                sys.exit(f"{s}: that op has no result (skipped CQE)")
            return v
        return int(s, 0)

    ring = Ring(sqpoll=sqpoll)
    done = {}  # user_data -> res, for CQEs that arrive late
    for i, (name, args) in enumerate(ops):
        keep = []
        sqe = build(name, args, num, keep)
        ring.push(OPCODE[name], IOSQE_CQE_SKIP_SUCCESS if skip else 0, user_data=i + 1, **sqe)
        if skip:  # a successful op posts no CQE: do not block on one
            ring.enter(1, 0, 0)
            time.sleep(0.05)
            done.update(ring.reap())
        else:
            ring.enter(1, 1, IORING_ENTER_GETEVENTS)
            done.update(ring.reap())
            while i + 1 not in done:
                ring.enter(0, 1, IORING_ENTER_GETEVENTS)
                done.update(ring.reap())
        results.append(done.pop(i + 1, None))
        del keep  # kernel has consumed the buffers (CQE seen, or op finished/skipped)
        print(json.dumps({"op": name, "res": results[-1]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
