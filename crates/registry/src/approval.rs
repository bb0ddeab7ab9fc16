//! What the operator approved at install: the permissions the installed manifest requested,
//! as a set of atoms (one per secret, callee, host entry, mount, ...). An upgrade whose manifest
//! requests an atom outside this set asks for more than was approved.

use std::collections::BTreeSet;

use warden_manifest::{Capability, GrantItem, Permissions};

/// The approved permission atoms, in a canonical text form (one per line when stored).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Approval(BTreeSet<String>);

impl Approval {
    /// The atoms `p` requests. The network entries keep the manifest's default ports with
    /// each host, so a change of `allowed_ports` is a change of the hosts it applies to.
    pub fn of(p: &Permissions) -> Approval {
        Approval(items(p).into_iter().map(|(atom, _)| atom).collect())
    }

    /// The atoms of `requested` that this approval does not cover.
    pub fn missing<'a>(&self, requested: &'a Approval) -> Vec<&'a str> {
        requested
            .0
            .iter()
            .filter(|x| !self.0.contains(*x))
            .map(String::as_str)
            .collect()
    }

    /// One atom per line.
    pub fn to_text(&self) -> String {
        self.0.iter().map(|x| format!("{x}\n")).collect()
    }

    pub fn from_text(text: &str) -> Approval {
        Approval(
            text.lines()
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    pub fn atoms(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// Each atom `p` requests, with the grant item that grants it (what an operator ticks to
/// approve that atom alone), in the manifest's order.
pub fn items(p: &Permissions) -> Vec<(String, GrantItem)> {
    let mut out = Vec::new();
    if p.kv {
        out.push(("kv".to_owned(), GrantItem::All(Capability::Kv)));
    }
    for s in &p.secrets {
        out.push((format!("secret {s}"), GrantItem::Secret(s.clone())));
    }
    for c in &p.calls {
        out.push((format!("call {c}"), GrantItem::Call(c.clone())));
    }
    if p.network.enabled {
        let mut ports: Vec<u16> = p.network.allowed_ports.clone();
        ports.sort_unstable();
        ports.dedup();
        for h in &p.network.allowed_hosts {
            let atom = match h.port {
                Some(_) => format!("network {h}"),
                None if ports.is_empty() => format!("network {h} ports default"),
                None => format!(
                    "network {h} ports {}",
                    ports
                        .iter()
                        .map(u16::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                ),
            };
            out.push((atom, GrantItem::Host(h.clone())));
        }
    }
    for m in &p.filesystem.paths {
        out.push((
            format!("filesystem {m} read-write"),
            GrantItem::Path(m.clone()),
        ));
    }
    for m in &p.filesystem.readonly_paths {
        out.push((
            format!("filesystem {m} read-only"),
            GrantItem::Path(m.clone()),
        ));
    }
    out
}
