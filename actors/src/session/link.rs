//! Link: the server's side of one holder connection, an actor under its Session.
//!
//! It listens for the holder's `Exited` (the status is kept in a watch the session awaits, and
//! the session is told as it would be by a pidfd) and for its hangup: a holder that goes away
//! without being released has died, and the session is told it lost its process. `Release` is
//! sent by the session itself ([`Link::release`]) when the process is over. (The output and its
//! acknowledgements go through the shared ring: `super::held`.)

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::socket::MsgFlags;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::msg::SessionMsg;
use crate::holder::wire::{self, Exit, FromHolder, ToHolder};
use crate::process::pidfd::PidFd;

/// What the session keeps of its holder connection.
#[derive(Clone)]
pub struct Link {
    socket: Arc<AsyncFd<OwnedFd>>,
    released: Arc<AtomicBool>,
    /// The holder's pid.
    pub holder: i32,
    /// A pidfd on the holder (opened while its connection is live, so it is that holder), to
    /// wake it if it was stopped: a SIGSTOPped holder neither reports an exit nor hears
    /// `Release`, and used to outlive its session's stop.
    pidfd: Option<Arc<PidFd>>,
}

impl Link {
    /// The session is over: the holder kills what is left, reaps, removes its files and exits.
    pub fn release(&self) {
        if self.released.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Err(e) = wire::send(self.socket.get_ref().as_fd(), &ToHolder::Release, &[]) {
            tracing::warn!(holder = self.holder, error = %e, "could not release the holder");
        }
        self.resume();
    }

    /// Continues the holder if something stopped it (SIGSTOP, a debugger): its session is being
    /// stopped or released, and only a running holder reaps, reports and leaves. A holder that
    /// runs ignores the SIGCONT.
    pub fn resume(&self) {
        let Some(pidfd) = &self.pidfd else {
            return;
        };
        if let Err(e) = pidfd.send_signal(nix::sys::signal::Signal::SIGCONT) {
            tracing::warn!(holder = self.holder, error = %e, "could not continue the holder");
        }
    }

    /// The holder is gone: there is nobody to release.
    pub fn forget(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// Whether [`release`](Self::release) was called.
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }
}

/// The link actor.
pub struct HolderLink;

/// Its arguments.
pub struct LinkArgs {
    /// The connection.
    pub link: Link,
    /// The session and the process incarnation this holder runs.
    pub session: ActorRef<SessionMsg>,
    /// Process incarnation.
    pub generation: u64,
    /// Where the exit goes.
    pub exit: watch::Sender<Option<Exit>>,
}

/// Its only message: wait for the next event.
#[derive(Debug)]
pub struct Pump;

/// Link state.
pub struct LinkState {
    args: LinkArgs,
}

impl Link {
    /// Registers an attached holder's socket with the reactor.
    pub fn new(socket: OwnedFd, holder: i32) -> io::Result<Link> {
        crate::fd::set_nonblocking(&socket)?;
        let socket = crate::fd::register(socket, Interest::READABLE)?;
        let pidfd = match PidFd::open(holder) {
            Ok(p) => Some(Arc::new(p)),
            Err(e) => {
                tracing::warn!(holder, error = %e, "no pidfd on the holder");
                None
            }
        };
        Ok(Link {
            socket: Arc::new(socket),
            released: Arc::new(AtomicBool::new(false)),
            holder,
            pidfd,
        })
    }
}

impl Actor for HolderLink {
    type Msg = Pump;
    type State = LinkState;
    type Arguments = LinkArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Pump>,
        args: LinkArgs,
    ) -> Result<LinkState, ActorProcessingErr> {
        myself.send_message(Pump)?;
        Ok(LinkState { args })
    }

    async fn handle(
        &self,
        myself: ActorRef<Pump>,
        _: Pump,
        st: &mut LinkState,
    ) -> Result<(), ActorProcessingErr> {
        let socket = st.args.link.socket.clone();
        let mut guard = socket.readable().await?;
        loop {
            match guard.try_io(|s| wire::recv::<FromHolder>(s.get_ref(), MsgFlags::MSG_DONTWAIT)) {
                Ok(Ok(Some((FromHolder::Exited(exit), _)))) => st.exited(exit),
                Ok(Ok(Some((other, _)))) => {
                    tracing::warn!(holder = st.args.link.holder, message = ?other, "unexpected message from a holder");
                }
                Ok(Ok(None)) => return st.hung_up(&myself),
                Ok(Err(e)) => {
                    tracing::error!(holder = st.args.link.holder, error = %e, "holder connection failed");
                    return st.hung_up(&myself);
                }
                Err(_would_block) => break,
            }
        }
        myself.send_message(Pump)?;
        Ok(())
    }
}

impl LinkState {
    fn exited(&mut self, exit: Exit) {
        if self.args.exit.send_replace(Some(exit)).is_none()
            && let Err(e) = self.args.session.send_message(SessionMsg::ProcessExited {
                generation: self.args.generation,
            })
        {
            tracing::debug!(error = %e, "session gone before its exit arrived");
        }
    }

    /// The holder closed the connection: expected after a release, a loss otherwise.
    fn hung_up(&mut self, myself: &ActorRef<Pump>) -> Result<(), ActorProcessingErr> {
        if !self.args.link.is_released() {
            let why = format!(
                "its holder (pid {}) died; the process tree was killed",
                self.args.link.holder
            );
            if let Err(e) = self.args.session.send_message(SessionMsg::HolderLost {
                generation: self.args.generation,
                why,
            }) {
                tracing::debug!(error = %e, "session gone before its holder's loss arrived");
            }
        }
        myself.stop(Some("holder hung up".into()));
        Ok(())
    }
}
