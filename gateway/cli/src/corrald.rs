//! `corrald`: the server, the harness and the whole command line, linked as a
//! position-independent executable; `corral serve` (and `bench`, `chaos`) run as this binary
//! (see the library's opening comment).

fn main() -> std::process::ExitCode {
    corral_cli::run()
}
