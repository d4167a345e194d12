//! Linux platform calls, one small file per concern, so that another platform
//! could be added beside them. Nothing outside `sys` makes these calls.
//!
//! - [`memfd`]: anonymous shared-memory files, their seals, read-only
//!   reopening and `mmap`.
//! - [`futex`]: process-shared futex wait (with a timeout) and wake.
//! - [`pidfd`]: a handle on another process that says when it has exited.
//! - [`socket`]: Unix-socket peer credentials (`SO_PEERCRED`) and descriptor
//!   passing (`SCM_RIGHTS`).
//! - [`cn_proc`]: the kernel's process connector (netlink process events).
//! - [`fs`]: file-system facts about an open file (pseudo file systems) and
//!   opening a path as a regular file only (`openat2`, no magic links).
//! - [`procfs`]: `/proc` through kept descriptors (`openat`, `pread`), the
//!   open-file limit, and the kernel's count of tasks.
//! - [`systemd`]: the socket systemd passes (socket activation) and its
//!   notify protocol (ready, stopping, watchdog).
//! - [`thread`]: the scheduling priority of procmond's own threads.
//! - [`wake`]: an eventfd that ends another thread's `poll` (stopping).

pub mod caps;
pub mod cn_proc;
pub mod fs;
pub mod futex;
pub mod memfd;
pub mod pidfd;
pub mod procfs;
pub mod socket;
pub mod systemd;
pub mod thread;
pub mod wake;
