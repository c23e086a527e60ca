//! `corral-holder`: a session's holder as a binary of its own (see `corral_actors::holder`).
//! `corral serve` starts it for every PTY session when it sits next to the `corral` binary;
//! linking nothing but the holder keeps the memory it holds for the session's whole life small.

fn main() -> std::process::ExitCode {
    corral_actors::holder::run::main()
}
