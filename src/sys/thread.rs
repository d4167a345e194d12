//! Scheduling of procmond's own threads.

use std::io;

/// Gives the calling thread the nice value `nice` (lower runs sooner).
/// procmond's event thread reads each new image's details at its exec
/// event and must get there before a short-lived process exits; raising
/// its priority needs `CAP_SYS_NICE` (root has it), so failure is normal
/// elsewhere and the caller just goes on.
pub fn set_current_thread_nice(nice: i32) -> io::Result<()> {
    let tid = rustix::thread::gettid();
    // On Linux, PRIO_PROCESS with a thread id sets that thread's value.
    rustix::process::setpriority_process(Some(tid), nice)?;
    Ok(())
}
