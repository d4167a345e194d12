//! Anonymous shared-memory files (`memfd_create`), their seals, a read-only
//! reopening, and `mmap`ed views of them.
//!
//! A memfd lives only as long as some descriptor or mapping refers to it, so
//! nothing is ever left behind in `/dev/shm`. Seals let the creator promise a
//! peer that the file's size (and, with [`Seals::FUTURE_WRITE`], its contents
//! through any new descriptor or mapping) can no longer change under it: a
//! shrink under a live mapping would otherwise kill the peer with `SIGBUS`.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use rustix::fs::{MemfdFlags, Mode, OFlags};
use rustix::mm::{MapFlags, ProtFlags};

/// The `F_SEAL_*` flags of a memfd.
pub use rustix::fs::SealFlags as Seals;

/// Creates a sealable, close-on-exec memfd named `name` (the name is only a
/// label in `/proc/<pid>/fd`) and sets its size to `len` bytes.
pub fn create(name: &str, len: u64) -> io::Result<OwnedFd> {
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)?;
    rustix::fs::ftruncate(&fd, len)?;
    Ok(fd)
}

/// Adds `seals` to the memfd `fd`. Seals can never be removed.
pub fn add_seals(fd: impl AsFd, seals: Seals) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(fd, seals)?)
}

/// The seals set on `fd`. Fails with `EINVAL` when `fd` is not a memfd (or
/// another file that supports sealing).
pub fn seals(fd: impl AsFd) -> io::Result<Seals> {
    Ok(rustix::fs::fcntl_get_seals(fd)?)
}

/// The size of the file behind `fd`, in bytes.
pub fn len(fd: impl AsFd) -> io::Result<u64> {
    let stat = rustix::fs::fstat(fd)?;
    // st_size of a regular file is never negative.
    u64::try_from(stat.st_size).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

/// Opens the file behind `fd` again, read-only, through `/proc/self/fd/N`.
///
/// `dup` would keep the original's write access; a new open file
/// description gets exactly the access asked for, so whoever holds the new
/// descriptor cannot `mmap` it writable. (It could still open it again for
/// writing through `/proc`; seal the memfd with [`Seals::FUTURE_WRITE`] to
/// close that door too.)
pub fn reopen_read_only(fd: impl AsFd) -> io::Result<OwnedFd> {
    let path = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    Ok(rustix::fs::open(
        path.as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// How a [`Mapping`] may be accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `PROT_READ`.
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`.
    ReadWrite,
}

/// A shared (`MAP_SHARED`) mapping of the first `len` bytes of a file,
/// unmapped on drop.
///
/// The mapping stays valid after the descriptor it was made from is closed.
/// Reading or writing it is up to the owner: this type only hands out the
/// base pointer, and every access through it needs its own argument (see
/// `ring::segment`).
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    access: Access,
}

// SAFETY: a `Mapping` is an address range owned by this process; nothing in
// it is tied to the thread that created it, and `munmap` may run on any
// thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only exposes the base pointer, the length and the access
// mode (plain values); any access to the memory is made, and argued, by the
// owner of the pointer.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared, with `access`.
    ///
    /// Fails with the kernel's error when `len` is zero, when the descriptor
    /// does not allow `access` (a read-only descriptor asked for
    /// [`Access::ReadWrite`] gives `EACCES`), or when a
    /// [`Seals::FUTURE_WRITE`] seal forbids a new writable mapping (`EPERM`).
    /// The caller checks `len` against the file's size: touching a page past
    /// the end of the file raises `SIGBUS`.
    pub fn map(fd: impl AsFd, len: usize, access: Access) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let prot = match access {
            Access::ReadOnly => ProtFlags::READ,
            Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        };
        // SAFETY: a null hint lets the kernel pick a fresh address range, so
        // no existing memory of this process is replaced; `len` is non-zero
        // and offset 0 is page-aligned. The returned range belongs to the new
        // `Mapping` alone, which unmaps it exactly once, in `drop`.
        let ptr =
            unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot, MapFlags::SHARED, fd, 0)? };
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from(io::ErrorKind::AddrNotAvailable))?;
        Ok(Mapping { ptr, len, access })
    }

    /// The first byte of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The mapped length in bytes, as asked for in [`Mapping::map`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: [`Mapping::map`] refuses an empty mapping.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The access the mapping was made with.
    pub fn access(&self) -> Access {
        self.access
    }

    /// The 4 bytes at `offset` as an atomic (a futex word, say), if the
    /// mapping is writable and they lie inside it, 4-aligned. `None`
    /// otherwise: a store through a read-only mapping would fault.
    pub fn atomic_u32(&self, offset: usize) -> Option<&AtomicU32> {
        let inside = offset
            .checked_add(size_of::<AtomicU32>())
            .is_some_and(|end| end <= self.len);
        if self.access != Access::ReadWrite || !inside || offset % align_of::<AtomicU32>() != 0 {
            return None;
        }
        // SAFETY: `offset..offset + 4` lies inside the live read-write
        // mapping, and is 4-aligned (the base is page-aligned). Every bit
        // pattern is a valid `AtomicU32`, and an atomic may be changed at any
        // time by other threads or processes sharing the memory. The borrow
        // of `self` keeps the mapping alive while the reference lives.
        Some(unsafe { &*self.ptr.as_ptr().add(offset).cast::<AtomicU32>() })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the range `mmap` returned in
        // `Mapping::map`, and this is the only place it is unmapped. Whoever
        // borrowed memory from the mapping borrowed it from `&self`, so no
        // such borrow outlives this `drop`.
        let result = unsafe { rustix::mm::munmap(self.ptr.as_ptr().cast(), self.len) };
        if let Err(err) = result {
            tracing::warn!(%err, "munmap failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::os::unix::fs::FileExt;

    #[test]
    fn create_sets_size_and_is_sealable() {
        let fd = create("test", 12345).unwrap();
        assert_eq!(len(&fd).unwrap(), 12345);
        add_seals(&fd, Seals::SHRINK | Seals::GROW).unwrap();
        let got = seals(&fd).unwrap();
        assert!(got.contains(Seals::SHRINK | Seals::GROW));
        // A sealed size cannot change.
        assert!(rustix::fs::ftruncate(&fd, 1).is_err());
        assert!(rustix::fs::ftruncate(&fd, 1 << 20).is_err());
    }

    #[test]
    fn seal_seal_forbids_more_seals() {
        let fd = create("test", 4096).unwrap();
        add_seals(&fd, Seals::SEAL).unwrap();
        assert!(add_seals(&fd, Seals::SHRINK).is_err());
    }

    #[test]
    fn seals_of_a_plain_file_fail() {
        let file = File::open("/proc/self/status").unwrap();
        assert!(seals(&file).is_err());
    }

    #[test]
    fn mapping_shares_memory_with_the_file() {
        let fd = create("test", 4096).unwrap();
        let map = Mapping::map(&fd, 4096, Access::ReadWrite).unwrap();
        let file = File::from(fd.try_clone().unwrap());
        file.write_all_at(b"hello", 100).unwrap();
        let mut seen = [0u8; 5];
        for (i, byte) in seen.iter_mut().enumerate() {
            // SAFETY (test): 100 + i < 4096, inside the live mapping; nothing
            // writes the file concurrently.
            *byte = unsafe { map.as_ptr().add(100 + i).read_volatile() };
        }
        assert_eq!(&seen, b"hello");
        assert_eq!(map.len(), 4096);
        assert_eq!(map.access(), Access::ReadWrite);
    }

    #[test]
    fn read_only_reopen_cannot_be_mapped_writable() {
        let fd = create("test", 4096).unwrap();
        let ro = reopen_read_only(&fd).unwrap();
        let err = Mapping::map(&ro, 4096, Access::ReadWrite).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::ACCESS.raw_os_error())
        );
        // ...but it maps read-only, and writes through `write` fail too.
        Mapping::map(&ro, 4096, Access::ReadOnly).unwrap();
        assert!(File::from(ro).write_at(b"x", 0).is_err());
    }

    #[test]
    fn future_write_seal_forbids_new_writable_mappings() {
        let fd = create("test", 4096).unwrap();
        let rw = Mapping::map(&fd, 4096, Access::ReadWrite).unwrap();
        add_seals(&fd, Seals::FUTURE_WRITE).unwrap();
        // Even the original read-write descriptor can no longer be mapped
        // writable, nor written...
        let err = Mapping::map(&fd, 4096, Access::ReadWrite).unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(rustix::io::Errno::PERM.raw_os_error())
        );
        assert!(
            File::from(fd.try_clone().unwrap())
                .write_at(b"x", 0)
                .is_err()
        );
        // ...while the mapping made before the seal still writes.
        // SAFETY (test): offset 0 is inside the live read-write mapping.
        unsafe { rw.as_ptr().write_volatile(7) };
        let mut byte = [0u8; 1];
        File::from(fd).read_exact_at(&mut byte, 0).unwrap();
        assert_eq!(byte[0], 7);
    }

    #[test]
    fn empty_mapping_is_refused() {
        let fd = create("test", 4096).unwrap();
        assert!(Mapping::map(&fd, 0, Access::ReadOnly).is_err());
    }
}
