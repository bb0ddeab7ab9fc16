//! `warden`: the command line. Parses arguments, calls the library crates, prints results.
//! Exit codes: 0 success, 1 failure (verification, denial, runtime), 2 usage.

#[macro_use]
mod out;
mod cmd;
mod component;
mod describe;
mod files;
mod logs;
mod migrate;
mod plugin;
mod storage;
mod ticker;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // The compile child (see `warden_runtime::isolate`): not a command for people.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == cmd::COMPILE_CHILD) {
        let code = warden_host::compile_child_main(
            &args[2..],
            &mut std::io::stdin().lock(),
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        );
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    // clap prints usage errors itself and exits with 2; --help and --version exit with 0.
    let cli = cmd::Cli::parse();
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report(&e);
            if e.downcast_ref::<cmd::UsageError>().is_some() {
                ExitCode::from(2)
            } else if let Some(cmd::Interrupted(_, signal)) = e.downcast_ref() {
                ExitCode::from(128 + signal)
            } else if cmd::busy(&e) {
                ExitCode::from(cmd::BUSY_EXIT)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// `error: ...` followed by each cause on its own line. Library errors often quote their source
/// in their own message; a cause already shown in the line above is not repeated. Errors can
/// quote untrusted text (a manifest's key, an extension's error message), so every line is
/// escaped and capped before it reaches the terminal.
fn report(e: &anyhow::Error) {
    eprintln!("error: {}", warden_audit::sanitize(&e.to_string()));
    let mut shown = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            eprintln!("  caused by: {}", warden_audit::sanitize(&text));
        }
        shown = text;
    }
}
