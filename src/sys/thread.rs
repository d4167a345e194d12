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

/// Puts the calling thread in the real-time class `SCHED_FIFO` at
/// `priority` (1 is the lowest), so it runs as soon as it is woken, ahead
/// of every ordinary thread. Needs `CAP_SYS_NICE` or an `RLIMIT_RTPRIO` of
/// at least `priority` (systemd's `LimitRTPRIO=`); the kernel's real-time
/// throttling (`sched_rt_runtime_us`, 95 % by default) still bounds it.
pub fn set_current_thread_fifo(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: `sched_setscheduler` reads the one `sched_param` passed by
    // reference, which lives across the call; on Linux pid 0 is the
    // calling thread. No memory is written.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
