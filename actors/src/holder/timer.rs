//! ReleaseTimer: the holder's one-shot timer (a timerfd in its `poll(2)` loop) for handing
//! logged pages of its ring back to the kernel a while after output stops (`run.rs`,
//! `Holder::release_logged`): no poll timeout while output flows, one wake-up when it stops.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};

/// A one-shot timer for the next release of logged pages.
pub(super) struct ReleaseTimer {
    fd: nix::sys::timerfd::TimerFd,
    armed: bool,
}

impl ReleaseTimer {
    pub(super) fn new() -> io::Result<ReleaseTimer> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let fd = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        Ok(ReleaseTimer { fd, armed: false })
    }

    /// Arms it to fire `after` from now, unless it is armed already (the earlier deadline
    /// stands: the loop looks again when it fires).
    pub(super) fn arm(&mut self, after: std::time::Duration) {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        if self.armed {
            return;
        }
        // A zero expiration would disarm the timer: at least a millisecond.
        let after = after.max(std::time::Duration::from_millis(1));
        match self.fd.set(
            Expiration::OneShot(TimeSpec::from_duration(after)),
            TimerSetTimeFlags::empty(),
        ) {
            Ok(()) => self.armed = true,
            // Not armed: the release then waits for the loop's next turn (output, the server),
            // as it would with nothing to wake it; said, since an idle ring then stays resident.
            Err(e) => eprintln!("corral holder: cannot arm the release timer: {e}"),
        }
    }

    pub(super) fn armed(&self) -> bool {
        self.armed
    }

    pub(super) fn fd(&self) -> RawFd {
        self.fd.as_fd().as_raw_fd()
    }

    /// It fired: read its count (so it is no longer readable) and disarm.
    pub(super) fn fired(&mut self) {
        let mut count = [0u8; 8];
        match nix::unistd::read(&self.fd, &mut count) {
            Ok(_) | Err(nix::errno::Errno::EAGAIN) => {}
            Err(e) => eprintln!("corral holder: reading the release timer: {e}"),
        }
        self.armed = false;
    }
}
