# A FUSE file system served straight from /dev/fuse (no libfuse): one
# regular file, "hung", whose reads are never answered, so a read of it
# blocks until this server exits. Usage: python3 -c "$(cat hung_fuse.py)"
# MOUNTPOINT. Prints "mounted" once the kernel's INIT is answered and "read"
# for each read it leaves unanswered. When stdin closes it unmounts (lazily)
# and exits; closing /dev/fuse aborts the connection, so blocked reads fail.
import ctypes, os, struct, sys, threading

mnt = sys.argv[1]
fd = os.open("/dev/fuse", os.O_RDWR)
libc = ctypes.CDLL(None, use_errno=True)
opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
if libc.mount(b"de-hung-fuse", mnt.encode(), b"fuse", 0, opts) != 0:
    err = ctypes.get_errno()
    print(f"mount failed: {os.strerror(err)}", flush=True)
    sys.exit(3)

def attr(ino, mode, size):
    # fuse_attr: ino size blocks atime mtime ctime, 3 nsec, mode nlink uid
    # gid rdev blksize flags
    return struct.pack("<QQQQQQIIIIIIIIII", ino, size, 1, 0, 0, 0, 0, 0, 0,
                       mode, 1, 0, 0, 0, 4096, 0)

def reply(unique, error=0, body=b""):
    os.write(fd, struct.pack("<IiQ", 16 + len(body), error, unique) + body)

def serve():
    while True:
        try:
            req = os.read(fd, 1 << 21)
        except OSError:
            return
        _, opcode, unique, node = struct.unpack_from("<IIQQ", req)
        payload = req[40:]
        if opcode == 26:  # INIT
            major, minor = struct.unpack_from("<II", payload)
            body = struct.pack("<IIIIHHIIHHI", 7, 31, 0, 0, 1, 1, 4096, 1, 1, 0, 0)
            reply(unique, 0, body + b"\0" * 28)
            print("mounted", flush=True)
        elif opcode == 1:  # LOOKUP
            name = payload.split(b"\0")[0]
            if node == 1 and name == b"hung":
                reply(unique, 0, struct.pack("<QQQQII", 2, 0, 3600, 3600, 0, 0)
                      + attr(2, 0o100644, 4096))
            else:
                reply(unique, -2)
        elif opcode == 3:  # GETATTR
            a = attr(1, 0o40755, 0) if node == 1 else attr(2, 0o100644, 4096)
            reply(unique, 0, struct.pack("<QII", 3600, 0, 0) + a)
        elif opcode == 14:  # OPEN
            reply(unique, 0, struct.pack("<QII", 0, 1, 0))  # FOPEN_DIRECT_IO
        elif opcode == 17:  # STATFS
            reply(unique, 0, struct.pack("<QQQQQIIII", 1, 0, 0, 1, 0, 4096, 255, 4096, 0)
                  + b"\0" * 24)
        elif opcode == 15:  # READ: never answered
            print("read", flush=True)
        elif opcode in (2, 36, 42):  # FORGET, INTERRUPT, BATCH_FORGET: no reply
            pass
        elif opcode in (18, 25):  # RELEASE, FLUSH
            reply(unique)
        else:
            reply(unique, -38)  # ENOSYS

threading.Thread(target=serve, daemon=True).start()
sys.stdin.read()
libc.umount2(mnt.encode(), 2)  # MNT_DETACH
os._exit(0)
