//! `corrald`: the same command line as `corral`, linked as a position-independent
//! executable; `corral serve` runs as this binary when it sits beside it (see the library's
//! opening comment).

fn main() -> std::process::ExitCode {
    corral_cli::run()
}
