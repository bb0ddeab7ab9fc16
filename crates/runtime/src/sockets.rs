//! Sockets (`wasi:sockets`), enforced per call against the install's network grant.
//!
//! - Without a network grant, creating a TCP socket and every name lookup are denied
//!   (`access-denied`) and recorded.
//! - A name lookup is allowed only for a name that some `allowed_hosts` entry matches (checked
//!   before any resolver call), through the host's [`Resolver`]; addresses that are not public
//!   (or inside the policy's `allow_networks`) are dropped, and the rest are remembered for this
//!   instance together with the entries that allowed them.
//! - `connect` is allowed only to an address remembered that way, on a port that one of those
//!   entries allows: a literal address the guest never looked up, or a name that re-resolves
//!   elsewhere (DNS rebinding), gets nothing.
//! - No `bind` (other than the implicit wildcard bind of `connect`), `listen` or `accept`; no
//!   UDP at all (the manifest has no way to ask for it).
//!
//! Wasmtime keeps the socket implementation; warden replaces `ip-name-lookup` and the two
//! `create-socket` interfaces (to audit and to use the host's resolver) and checks every
//! address through Wasmtime's `socket_addr_check` hook.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use warden_call::{Capability, Ledger, Withheld};
use warden_manifest::{AllowedHost, EffectiveNetwork, RequestHost};
use warden_net::{DNS_TIMEOUT, Resolver, addr};
use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, SocketError, subscribe};
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};

mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "warden:host/sockets-shim",
        imports: { default: async | trappable },
        trappable_error_type: {
            "wasi:sockets/network.error-code" => wasmtime_wasi::p2::SocketError,
        },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:sockets/network": wasmtime_wasi::p2::bindings::sockets::network,
            "wasi:sockets/tcp": wasmtime_wasi::p2::bindings::sockets::tcp,
            "wasi:sockets/udp": wasmtime_wasi::p2::bindings::sockets::udp,
            "wasi:sockets/ip-name-lookup.resolve-address-stream": super::ResolveAddressStream,
        },
    });
}

use bindings::wasi::sockets::network::{ErrorCode, IpAddressFamily};
use bindings::wasi::sockets::{ip_name_lookup, tcp_create_socket, udp_create_socket};

/// Addresses remembered per call, at most (a guest resolving in a loop stops growing here).
const MAX_REMEMBERED: usize = 1024;

/// The answer to one lookup, handed out one address at a time.
pub struct ResolveAddressStream(std::vec::IntoIter<IpAddr>);

#[wasmtime_wasi::async_trait]
impl Pollable for ResolveAddressStream {
    /// The lookup finished before the stream was created.
    async fn ready(&mut self) {}
}

/// The addresses allowed names resolved to in this call, with the entries that allowed each.
type Resolved = HashMap<IpAddr, Vec<AllowedHost>>;

/// What one call's sockets may do: its grant, resolver, and the addresses its allowed names
/// resolved to (with the entries that allowed each).
#[derive(Clone)]
pub(crate) struct SocketPolicy {
    grant: Option<Arc<EffectiveNetwork>>,
    resolver: Arc<dyn Resolver>,
    /// `None` without a grant: nothing may connect, so nothing is remembered.
    resolved: Option<Arc<Mutex<Resolved>>>,
    ledger: Ledger,
    /// Why there is no grant, when there is none.
    withheld: Withheld,
}

impl SocketPolicy {
    pub(crate) fn new(
        grant: Option<Arc<EffectiveNetwork>>,
        resolver: Arc<dyn Resolver>,
        ledger: Ledger,
        withheld: Withheld,
    ) -> Self {
        SocketPolicy {
            resolved: grant.as_ref().map(|_| Arc::default()),
            grant,
            resolver,
            ledger,
            withheld,
        }
    }

    /// Configures Wasmtime's socket layer: TCP only with a grant, and every address checked.
    pub(crate) fn install(&self, b: &mut WasiCtxBuilder) {
        b.allow_tcp(self.grant.is_some())
            .allow_udp(false)
            // Wasmtime's own lookup is replaced (see `linker`); keep it off in case.
            .allow_ip_name_lookup(false);
        if self.grant.is_none() {
            // No socket can be created (see `create_tcp_socket`), and Wasmtime's default check
            // refuses every address anyway: nothing to install, nothing to allocate per call.
            return;
        }
        let policy = self.clone();
        b.socket_addr_check(move |addr, use_| {
            let allowed = policy.check(addr, use_);
            Box::pin(async move { allowed })
        });
    }

    /// Forgets what names resolved to: a kept instance's next call may connect only to what
    /// an allowed name resolves to in that call, as a fresh instance's.
    pub(crate) fn forget_resolutions(&self) {
        if let Some(Ok(mut m)) = self.resolved.as_ref().map(|r| r.lock()) {
            m.clear();
        }
    }

    fn deny(&self, target: &str, reason: impl Into<String>) {
        self.ledger
            .deny(Capability::Network, target, Some(reason.into()));
    }

    /// Whether the guest may use `addr` this way.
    fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let target = format!("tcp://{addr}");
        match use_ {
            SocketAddrUse::TcpConnect => {}
            // `connect` binds implicitly to the wildcard address first.
            SocketAddrUse::TcpBind if addr.ip().is_unspecified() && addr.port() == 0 => {
                return true;
            }
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => {
                self.deny(&target, "extensions may not accept connections");
                return false;
            }
            _ => {
                self.deny(
                    &format!("udp://{addr}"),
                    "UDP is not available to extensions",
                );
                return false;
            }
        }
        let Some(grant) = &self.grant else {
            self.deny(&target, self.withheld.reason(Capability::Network));
            return false;
        };
        let ip = addr.ip().to_canonical();
        let entries = self
            .resolved
            .as_ref()
            .and_then(|r| r.lock().ok())
            .and_then(|m| m.get(&ip).cloned())
            .unwrap_or_default();
        if entries.is_empty() {
            self.deny(
                &target,
                "not an address an allowed name resolved to in this call",
            );
            return false;
        }
        if !entries
            .iter()
            .any(|e| e.allows_port(addr.port(), &grant.allowed_ports))
        {
            self.deny(&target, "port not allowed");
            return false;
        }
        self.ledger.allow(Capability::Network, &target);
        true
    }

    /// The checks of a name lookup; on success, the allowed addresses (also remembered).
    async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ErrorCode> {
        let target = format!("dns:{name}");
        let Some(grant) = &self.grant else {
            self.deny(&target, self.withheld.reason(Capability::Network));
            return Err(ErrorCode::AccessDenied);
        };
        let host = match RequestHost::parse(name) {
            Ok(h) => h,
            Err(e) => {
                self.deny(&target, e.to_string());
                return Err(ErrorCode::InvalidArgument);
            }
        };
        let entries: Vec<AllowedHost> = grant
            .allowed_hosts
            .iter()
            .filter(|h| h.matches_host(&host))
            .cloned()
            .collect();
        if entries.is_empty() {
            self.deny(&target, "not an allowed host");
            return Err(ErrorCode::AccessDenied);
        }
        let addrs = match &host {
            RequestHost::Ip(ip) => vec![*ip],
            RequestHost::Name(n) => {
                // A query is a message to the name's servers, which the guest chose within
                // its grant: witnessed first, as a request is, and recorded even if it fails.
                if self
                    .ledger
                    .before_change(Capability::Network)
                    .await
                    .is_err()
                {
                    return Err(ErrorCode::TemporaryResolverFailure);
                }
                self.ledger.allow(Capability::Network, &target);
                match tokio::time::timeout(DNS_TIMEOUT, self.resolver.lookup(n)).await {
                    Err(_) => return Err(ErrorCode::TemporaryResolverFailure),
                    Ok(Err(_)) => return Err(ErrorCode::NameUnresolvable),
                    Ok(Ok(a)) => a,
                }
            }
        };
        let mut kept = Vec::new();
        let mut refused = None;
        for ip in addrs {
            let ip = ip.to_canonical();
            match addr::check(ip, &grant.allow_networks) {
                Ok(()) => kept.push(ip),
                Err(why) => {
                    refused.get_or_insert_with(|| {
                        format!("resolves to a non-public address ({ip}: {why})")
                    });
                }
            }
        }
        if kept.is_empty() {
            self.deny(
                &target,
                refused.unwrap_or_else(|| "resolves to no address".into()),
            );
            return Err(ErrorCode::AccessDenied);
        }
        if let Some(Ok(mut m)) = self.resolved.as_ref().map(|r| r.lock()) {
            for ip in &kept {
                if m.len() >= MAX_REMEMBERED && !m.contains_key(ip) {
                    break;
                }
                let known = m.entry(*ip).or_default();
                for e in &entries {
                    if !known.contains(e) {
                        known.push(e.clone());
                    }
                }
            }
        }
        self.ledger.allow(Capability::Network, &target);
        Ok(kept)
    }
}

impl ip_name_lookup::Host for SocketsView<'_> {
    async fn resolve_addresses(
        &mut self,
        network: Resource<Network>,
        name: String,
    ) -> Result<Resource<ResolveAddressStream>, SocketError> {
        // The network resource is the capability to call this; it must be a live one.
        self.wasi.table.get(&network)?;
        let policy = self.policy.clone();
        let addrs = policy.lookup(&name).await.map_err(SocketError::from)?;
        let stream = ResolveAddressStream(addrs.into_iter());
        Ok(self.wasi.table.push(stream)?)
    }
}

impl ip_name_lookup::HostResolveAddressStream for SocketsView<'_> {
    async fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> Result<Option<ip_name_lookup::IpAddress>, SocketError> {
        let s = self.wasi.table.get_mut(&stream)?;
        Ok(s.0.next().map(Into::into))
    }

    async fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(self.wasi.table, stream)
    }

    async fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.wasi.table.delete(stream)?;
        Ok(())
    }
}

/// Sockets one call may hold open at once (each a descriptor of the host process).
pub(crate) const MAX_SOCKETS: usize = 64;
/// The target of the denial of a socket past [`MAX_SOCKETS`].
pub(crate) const OPEN_SOCKETS_TARGET: &str = "open sockets";

impl tcp_create_socket::Host for SocketsView<'_> {
    async fn create_tcp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> Result<Resource<tcp_create_socket::TcpSocket>, SocketError> {
        if self.policy.grant.is_none() {
            self.policy
                .deny("tcp", self.policy.withheld.reason(Capability::Network));
            return Err(ErrorCode::AccessDenied.into());
        }
        // Each socket is a descriptor of the host process, shared by every call and tenant.
        let open = self
            .wasi
            .table
            .iter_mut()
            .filter(|e| e.downcast_ref::<wasmtime_wasi::p2::TcpSocket>().is_some())
            .count();
        if open >= MAX_SOCKETS {
            self.policy.deny(
                OPEN_SOCKETS_TARGET,
                format!("more than {MAX_SOCKETS} sockets open at once in one call"),
            );
            return Err(ErrorCode::NewSocketLimit.into());
        }
        // A connection may change something at its destination: the call's witness first.
        if self
            .policy
            .ledger
            .before_change(Capability::Network)
            .await
            .is_err()
        {
            return Err(ErrorCode::Unknown.into());
        }
        wasmtime_wasi::p2::bindings::sockets::tcp_create_socket::Host::create_tcp_socket(
            &mut self.wasi,
            family,
        )
    }
}

impl udp_create_socket::Host for SocketsView<'_> {
    async fn create_udp_socket(
        &mut self,
        _family: IpAddressFamily,
    ) -> Result<Resource<udp_create_socket::UdpSocket>, SocketError> {
        self.policy
            .deny("udp", "UDP is not available to extensions");
        Err(ErrorCode::AccessDenied.into())
    }
}

/// The shim's functions return `network.error-code`; these delegate to Wasmtime's own
/// conversions (the generated glue asks the store's data for them).
impl wasmtime_wasi::p2::bindings::sockets::network::Host for SocketsView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::convert_error_code(
            &mut self.wasi,
            error,
        )
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        wasmtime_wasi::p2::bindings::sockets::network::Host::network_error_code(&mut self.wasi, err)
    }
}

impl wasmtime_wasi::p2::bindings::sockets::network::HostNetwork for SocketsView<'_> {
    fn drop(&mut self, this: Resource<Network>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::bindings::sockets::network::HostNetwork::drop(&mut self.wasi, this)
    }
}

/// What the shadowed socket interfaces may touch of a call: Wasmtime's sockets context (its
/// implementation does the socket work) and the call's socket policy.
pub(crate) struct SocketsView<'a> {
    pub(crate) wasi: WasiSocketsCtxView<'a>,
    pub(crate) policy: &'a SocketPolicy,
}

struct Sockets;

impl HasData for Sockets {
    type Data<'a> = SocketsView<'a>;
}

/// Replaces Wasmtime's name lookup and socket creation with the ones above. Must be called
/// after Wasmtime's WASI interfaces are added.
pub(crate) fn add_to_linker<T: Send + 'static>(
    l: &mut Linker<T>,
    view: fn(&mut T) -> SocketsView<'_>,
) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    ip_name_lookup::add_to_linker::<T, Sockets>(l, view)?;
    tcp_create_socket::add_to_linker::<T, Sockets>(l, view)?;
    udp_create_socket::add_to_linker::<T, Sockets>(l, view)?;
    l.allow_shadowing(false);
    Ok(())
}
