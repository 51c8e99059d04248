#!/usr/bin/env python3
"""Make syscalls the way a 64-bit process usually does not, standard library only: 32-bit (i386)
ones with `int $0x80`, x32 ones, and 64-bit ones whose number register has garbage in its upper
half (the kernel reads the low 32 bits).

usage: syscall32.py OP ARGS... [OP ARGS...]
  getpid | open PATH | openat PATH | mkdir PATH | rename OLD NEW
  socket DOMAIN TYPE PROTOCOL (i386 socket) | socketcall-socket DOMAIN TYPE PROTOCOL
  socketcall-connect IP PORT (a new TCP socket)
  send HOW IP PORT DATA: one UDP datagram from a new socket, HOW being sendmsg (i386's, with
    the address), socketcall-sendmsg, socketcall-sendto, or socketcall-send (connected first);
    DATA may be hex:HEXDIGITS
  high-openat PATH | high-mkdir PATH | high-socket DOMAIN TYPE PROTOCOL: x86_64's `syscall`
    with garbage in the upper half of the number's register
  x32-openat PATH: x86_64's `syscall` with the x32 ABI's number for openat (ENOSYS where the
    kernel has no x32)
  query HOW IP PORT DATA: sends DATA from a new UDP socket (socketcall-sendto) and receives
    the answer with HOW: recvmsg (i386's), socketcall-recvmsg or socketcall-recvfrom
Paths and buffers are copied below 4 GiB (the kernel reads 32-bit addresses). Every address
and file descriptor goes in with garbage in its register's upper half, which the kernel
ignores for a 32-bit call. One line per op: "OP RESULT" (the call's return value; for an
open, what the file holds).
"""
import ctypes, mmap, os, select, socket, struct, sys

# push rbx; push rbp; mov eax, edi; mov rbx, rsi; mov r10, rdx; mov r11, rcx; mov rcx, r10;
# mov rdx, r11; mov rsi, r8; mov rdi, r9; mov rbp, [rsp+0x18]; int 0x80; pop rbp; pop rbx; ret
STUB = bytes([0x53, 0x55, 0x89, 0xf8, 0x48, 0x89, 0xf3, 0x49, 0x89, 0xd2, 0x49, 0x89, 0xcb,
              0x4c, 0x89, 0xd1, 0x4c, 0x89, 0xda, 0x4c, 0x89, 0xc6, 0x4c, 0x89, 0xcf, 0x48,
              0x8b, 0x6c, 0x24, 0x18, 0xcd, 0x80, 0x5d, 0x5b, 0xc3])
# i386 numbers (arch/x86/entry/syscalls/syscall_32.tbl)
NR = {"getpid": 20, "open": 5, "openat": 295, "mkdir": 39, "rename": 38, "socket": 359,
      "sendmsg": 370, "recvmsg": 372, "socketcall": 102}
SYS_SOCKET, SYS_CONNECT, SYS_SEND, SYS_SENDTO, SYS_RECVFROM = 1, 3, 9, 11, 12
SYS_SENDMSG, SYS_RECVMSG = 16, 17
AT_FDCWD = 0xFFFFFF9C
MAP_32BIT = 0x40
GARBAGE = 0xDEAD << 32
X32_SYSCALL_BIT = 0x40000000
# mov rax, rdi; mov rdi, rsi; mov rsi, rdx; mov rdx, rcx; mov r10, r8; mov r8, r9;
# mov r9, [rsp+8]; syscall; ret
STUB64 = bytes([0x48, 0x89, 0xf8, 0x48, 0x89, 0xf7, 0x48, 0x89, 0xd6, 0x48, 0x89, 0xca, 0x4d,
                0x89, 0xc2, 0x4d, 0x89, 0xc8, 0x4c, 0x8b, 0x4c, 0x24, 0x08, 0x0f, 0x05, 0xc3])
NR64 = {"openat": 257, "mkdir": 83, "socket": 41}

code = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
code.write(STUB)
int80 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, *([ctypes.c_uint64] * 6))(
    ctypes.addressof(ctypes.c_char.from_buffer(code)))
code.seek(64)
code.write(STUB64)
syscall64 = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_uint64, *([ctypes.c_uint64] * 6))(
    ctypes.addressof(ctypes.c_char.from_buffer(code)) + 64)
low = mmap.mmap(-1, 1 << 16, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)
low_base = ctypes.addressof(ctypes.c_char.from_buffer(low))
assert low_base < 1 << 32, hex(low_base)
used = 0


def place(data):
    """Copies `data` below 4 GiB; its address, with garbage above the low 32 bits."""
    global used
    at = used
    low[at:at + len(data)] = data
    used += (len(data) + 15) & ~15
    return (low_base + at) | GARBAGE


def call(name, *a):
    a = list(a) + [0] * (6 - len(a))
    return int80(NR[name], *a)


def call64(nr, *a):
    return syscall64(nr, *(list(a) + [0] * (6 - len(a))))


def cstr(path):
    return place(path.encode() + b"\0")


def socketcall(which, *words):
    return call("socketcall", which | GARBAGE, place(struct.pack("<%dI" % len(words), *words)))


def sockaddr(ip, port):
    return place(struct.pack("<HH4s8x", socket.AF_INET, socket.htons(port), socket.inet_aton(ip)))


def msghdr(name, buf, length):
    """A struct compat_msghdr { name, namelen, iov, iovlen, control, controllen, flags } of
    one struct compat_iovec { base, len }, below 4 GiB; its address, with garbage."""
    iov = place(struct.pack("<II", buf, length)) & 0xFFFFFFFF
    return place(struct.pack("<7I", name, 16, iov, 1, 0, 0, 0))


def payload(data):
    """A command line's DATA: text, or hex:HEXDIGITS for bytes."""
    return bytes.fromhex(data[4:]) if data.startswith("hex:") else data.encode()


def message_call(direct, name, which, s, msg):
    """sendmsg/recvmsg of `msg` on socket `s`: i386's own call `name` when `direct`,
    else socketcall's `which`."""
    if direct:
        return call(name, s.fileno() | GARBAGE, msg, 0)
    return socketcall(which, s.fileno(), msg & 0xFFFFFFFF, 0)


def send(how, ip, port, data):
    data = payload(data)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    buf = place(data) & 0xFFFFFFFF
    addr = sockaddr(ip, port) & 0xFFFFFFFF
    if how == "socketcall-send":
        s.connect((ip, port))
        r = socketcall(SYS_SEND, s.fileno(), buf, len(data), 0)
    elif how == "socketcall-sendto":
        r = socketcall(SYS_SENDTO, s.fileno(), buf, len(data), 0, addr, 16)
    else:
        r = message_call(how == "sendmsg", "sendmsg", SYS_SENDMSG, s, msghdr(addr, buf, len(data)))
    s.close()
    return r


def query(how, ip, port, data):
    data = payload(data)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    buf = place(data) & 0xFFFFFFFF
    sent = socketcall(SYS_SENDTO, s.fileno(), buf, len(data), 0, sockaddr(ip, port) & 0xFFFFFFFF, 16)
    assert sent == len(data), sent
    answer = place(bytes(512)) & 0xFFFFFFFF
    source = place(bytes(16)) & 0xFFFFFFFF
    select.select([s], [], [], 10)
    if how == "socketcall-recvfrom":
        length = place(struct.pack("<I", 16)) & 0xFFFFFFFF
        r = socketcall(SYS_RECVFROM, s.fileno(), answer, 512, 0, source, length)
    else:
        r = message_call(how == "recvmsg", "recvmsg", SYS_RECVMSG, s, msghdr(source, answer, 512))
    s.close()
    return r


def main(argv):
    out = []
    i = 0
    while i < len(argv):
        op = argv[i]
        i += 1
        if op == "getpid":
            out.append("getpid %d" % call("getpid"))
        elif op in ("open", "openat"):
            path = argv[i]
            i += 1
            fd = call("open", cstr(path), 0) if op == "open" else \
                call("openat", AT_FDCWD | GARBAGE, cstr(path), 0)
            if fd < 0:
                out.append("%s %d" % (op, fd))
            else:
                out.append("%s %s" % (op, os.read(fd, 100).decode().strip()))
                os.close(fd)
        elif op in ("high-openat", "high-mkdir", "high-socket"):
            name = op[len("high-"):]
            nr = NR64[name] | GARBAGE
            if name == "openat":
                r = call64(nr, 0xFFFFFFFFFFFFFF9C, cstr(argv[i]) & 0xFFFFFFFF, 0)
                i += 1
                if r >= 0:
                    out.append("%s %s" % (op, os.read(r, 100).decode().strip()))
                    os.close(r)
                    continue
            elif name == "mkdir":
                r = call64(nr, cstr(argv[i]) & 0xFFFFFFFF, 0o755)
                i += 1
            else:
                r = call64(nr, *(int(x, 0) for x in argv[i:i + 3]))
                i += 3
            out.append("%s %d" % (op, r))
        elif op == "x32-openat":
            libc = ctypes.CDLL(None, use_errno=True)
            libc.syscall.restype = ctypes.c_long
            path = ctypes.create_string_buffer(argv[i].encode())
            i += 1
            fd = libc.syscall(ctypes.c_long(X32_SYSCALL_BIT | 257), ctypes.c_long(-100), path,
                              ctypes.c_long(0))
            out.append("x32-openat %d" % (fd if fd >= 0 else -ctypes.get_errno()))
        elif op == "mkdir":
            out.append("mkdir %d" % call("mkdir", cstr(argv[i]), 0o755))
            i += 1
        elif op == "rename":
            out.append("rename %d" % call("rename", cstr(argv[i]), cstr(argv[i + 1])))
            i += 2
        elif op in ("socket", "socketcall-socket"):
            domain, kind, proto = (int(x, 0) for x in argv[i:i + 3])
            i += 3
            if op == "socket":
                fd = call("socket", domain, kind, proto)
            else:
                fd = socketcall(SYS_SOCKET, domain, kind, proto)
            out.append("%s %d" % (op, fd))
        elif op == "socketcall-connect":
            ip, port = argv[i], int(argv[i + 1])
            i += 2
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            r = socketcall(SYS_CONNECT, s.fileno(), sockaddr(ip, port) & 0xFFFFFFFF, 16)
            out.append("socketcall-connect %d" % r)
            s.close()
        elif op == "send":
            how, ip, port, data = argv[i], argv[i + 1], int(argv[i + 2]), argv[i + 3]
            i += 4
            out.append("send %s %d" % (how, send(how, ip, port, data)))
        elif op == "query":
            how, ip, port, data = argv[i], argv[i + 1], int(argv[i + 2]), argv[i + 3]
            i += 4
            out.append("query %s %d" % (how, query(how, ip, port, data)))
        else:
            sys.exit("unknown op " + op)
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1:])
