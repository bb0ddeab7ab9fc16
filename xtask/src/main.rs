//! `cargo run -p xtask -- check`: every architectural check on this workspace. Prints one line
//! per violation; exits 1 if there is any, 2 if the checks could not run.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["check"] {
        eprintln!("usage: cargo run -p xtask -- check");
        return ExitCode::from(2);
    }
    match xtask::cargo_metadata().and_then(|meta| xtask::check(&meta)) {
        Ok(violations) if violations.is_empty() => {
            eprintln!("xtask check: all invariants hold");
            ExitCode::SUCCESS
        }
        Ok(violations) => {
            for v in &violations {
                println!("{v}");
            }
            eprintln!("xtask check: {} violation(s)", violations.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("xtask check: {e}");
            ExitCode::from(2)
        }
    }
}
