//! Subcommands. Each module turns parsed arguments into library calls and prints the result.

mod inspect;
mod keygen;
mod pack;
mod sign;
mod verify;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// warden: a secure host for untrusted extensions.
///
/// Extensions ship as signed, content-addressed bundles (.wext) that are verified before use.
#[derive(Parser)]
#[command(name = "warden", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an Ed25519 signing key for a publisher.
    ///
    /// Writes DIR/NAME.key (private, mode 0600, never overwritten) and DIR/NAME.pub, and prints
    /// the [[publisher]] entry to add to a trust bundle.
    Keygen {
        /// Publisher name: lowercase letters, digits and '-'.
        #[arg(long, value_name = "NAME")]
        publisher: String,
        /// Folder to write the key files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Pack an extension folder into a canonical bundle.
    ///
    /// Validates extension.toml, then packs it with the entry file and the assets/ and ui
    /// folders. The same folder always gives the same bytes. Prints the content hash.
    Pack {
        /// Folder holding extension.toml.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Bundle file to write.
        #[arg(long, value_name = "FILE.wext")]
        out: PathBuf,
    },
    /// Sign a bundle with a publisher key (DSSE envelope, Ed25519).
    ///
    /// If SIG already holds signatures for this same bundle, the new one is added to them.
    Sign {
        #[arg(value_name = "FILE.wext")]
        bundle: PathBuf,
        /// Private key in PEM (PKCS#8), e.g. from `warden keygen` or `openssl genpkey -algorithm ed25519`.
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Signature file to write [default: FILE.wext.sig].
        #[arg(long, value_name = "SIG")]
        out: Option<PathBuf>,
    },
    /// Verify a bundle's signature against a trust bundle and show what it may do.
    Verify {
        #[arg(value_name = "FILE.wext")]
        bundle: PathBuf,
        /// Trust bundle (TOML with [[publisher]] entries).
        #[arg(long, value_name = "TRUST", env = "WARDEN_TRUST_BUNDLE")]
        trust: PathBuf,
        /// Signature file [default: FILE.wext.sig].
        #[arg(long, value_name = "SIG")]
        sig: Option<PathBuf>,
    },
    /// Show a bundle's manifest, permissions, hash and component interfaces (NOT verified).
    Inspect {
        #[arg(value_name = "FILE.wext")]
        bundle: PathBuf,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen { publisher, out } => keygen::run(&publisher, &out),
        Command::Pack { dir, out } => pack::run(&dir, &out),
        Command::Sign { bundle, key, out } => sign::run(&bundle, &key, out),
        Command::Verify { bundle, trust, sig } => verify::run(&bundle, &trust, sig),
        Command::Inspect { bundle } => inspect::run(&bundle),
    }
}

/// The default signature path: `FILE.wext` → `FILE.wext.sig`.
fn default_sig(bundle: &std::path::Path) -> PathBuf {
    let mut s = bundle.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}
