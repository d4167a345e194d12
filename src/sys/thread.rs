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

/// The calling thread's scheduling class (policy) and its parameters.
fn current_class() -> io::Result<(i32, libc::sched_param)> {
    // SAFETY: `sched_getscheduler` takes no pointer; pid 0 is the calling
    // thread.
    let policy = unsafe { libc::sched_getscheduler(0) };
    if policy < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `sched_getparam` writes one `sched_param` into `param`, which
    // is valid for writes and lives across the call.
    if unsafe { libc::sched_getparam(0, &mut param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((policy, param))
}

/// The calling thread in `SCHED_FIFO` at `priority` until the guard is
/// dropped, then back in the scheduling class and priority it had (its
/// nice value is kept through both changes). For a thread of a pool that
/// serves one latency-bound task real-time and then goes back to ordinary
/// work. Must be dropped on the thread that made it (it is `!Send`).
#[derive(Debug)]
pub struct RealtimeGuard {
    policy: i32,
    param: libc::sched_param,
    /// `!Send`: the scheduling class belongs to the thread that set it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl RealtimeGuard {
    /// Makes the calling thread real-time; fails (and changes nothing) as
    /// [`set_current_thread_fifo`] does.
    pub fn enter(priority: i32) -> io::Result<RealtimeGuard> {
        let (policy, param) = current_class()?;
        set_current_thread_fifo(priority)?;
        Ok(RealtimeGuard {
            policy,
            param,
            _thread: std::marker::PhantomData,
        })
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        // SAFETY: as in `set_current_thread_fifo`: the kernel reads the one
        // `sched_param`, alive across the call. Going back to an ordinary
        // class needs no privilege; it fails where the class the thread had
        // cannot be set again (`SCHED_DEADLINE`, or a real-time priority
        // above `RLIMIT_RTPRIO` without `CAP_SYS_NICE`). The thread then
        // stays real-time, which is logged.
        let rc = unsafe { libc::sched_setscheduler(0, self.policy, &self.param) };
        if rc != 0 {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                "a thread could not leave the real-time class"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's scheduling class and priority.
    fn class() -> (i32, i32) {
        let (policy, param) = current_class().unwrap();
        (policy, param.sched_priority)
    }

    #[test]
    fn a_realtime_guard_gives_the_thread_back_its_class_and_nice_value() {
        std::thread::spawn(|| {
            // An ordinary thread at a nice value of its own (raising it
            // needs no privilege).
            set_current_thread_nice(3).unwrap();
            let before = class();
            assert_eq!(before, (libc::SCHED_OTHER, 0));
            match RealtimeGuard::enter(1) {
                Ok(guard) => {
                    assert_eq!(class(), (libc::SCHED_FIFO, 1));
                    drop(guard);
                }
                // Not allowed here (no CAP_SYS_NICE, no RLIMIT_RTPRIO): the
                // thread must be left as it was.
                Err(error) => assert_eq!(error.raw_os_error(), Some(libc::EPERM), "{error}"),
            }
            assert_eq!(class(), before);
            let tid = rustix::thread::gettid();
            assert_eq!(rustix::process::getpriority_process(Some(tid)).unwrap(), 3);
        })
        .join()
        .unwrap();
    }
}
