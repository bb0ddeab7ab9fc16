//! Name resolution for outgoing requests. The egress check resolves a name once, checks every
//! address, and connects to the checked address: nothing is resolved a second time.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

/// Time to resolve a name, for every lookup an extension causes (HTTP or sockets).
pub const DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// What [`Resolver::lookup`] returns: every address of the name.
pub type Lookup<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<IpAddr>>> + Send + 'a>>;

/// Turns a host name into addresses. The default, [`SystemResolver`], asks the operating
/// system; embedders and tests may supply their own (e.g. a fixed table):
///
/// ```
/// use warden_net::{Lookup, Resolver};
///
/// struct Fixed;
/// impl Resolver for Fixed {
///     fn lookup<'a>(&'a self, _name: &'a str) -> Lookup<'a> {
///         Box::pin(async { Ok(vec!["93.184.216.34".parse().unwrap()]) })
///     }
/// }
/// ```
pub trait Resolver: Send + Sync + 'static {
    /// Every address `name` resolves to. `name` has passed the allowlist and is normalized
    /// (lowercase ASCII, no trailing dot).
    fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a>;
}

/// The operating system's resolver, through `tokio::net::lookup_host`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn lookup<'a>(&'a self, name: &'a str) -> Lookup<'a> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((name, 0)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}
