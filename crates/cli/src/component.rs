//! A component's top-level imports and exports, read with wasmparser (no Wasmtime needed).

use anyhow::{Context, Result};
use wasmparser::{ComponentExternalKind, ComponentTypeRef, Parser, Payload};

pub struct Interfaces {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Lists what the component imports and exports at the top level: one pass of the parser,
/// no validation (validating a hostile component's types can cost minutes; loads validate it
/// in the bounded compile process).
pub fn interfaces(bytes: &[u8]) -> Result<Interfaces> {
    if !Parser::is_component(bytes) {
        anyhow::bail!("the entry is not a WebAssembly component");
    }
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    // Nested modules and components have sections of their own; only depth 0 is the interface.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("reading the component")? {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(s) if depth == 0 => {
                for import in s {
                    let import = import.context("reading an import")?;
                    let kind = match import.ty {
                        ComponentTypeRef::Instance(_) => "interface",
                        ComponentTypeRef::Func(_) => "function",
                        ComponentTypeRef::Type(_) => "type",
                        ComponentTypeRef::Module(_) => "module",
                        ComponentTypeRef::Component(_) => "component",
                        ComponentTypeRef::Value(_) => "value",
                    };
                    imports.push(format!("{} ({kind})", import.name.name));
                }
            }
            Payload::ComponentExportSection(s) if depth == 0 => {
                for export in s {
                    let export = export.context("reading an export")?;
                    let kind = match export.kind {
                        ComponentExternalKind::Instance => "interface",
                        ComponentExternalKind::Func => "function",
                        ComponentExternalKind::Type => "type",
                        ComponentExternalKind::Module => "module",
                        ComponentExternalKind::Component => "component",
                        ComponentExternalKind::Value => "value",
                    };
                    exports.push(format!("{} ({kind})", export.name.name));
                }
            }
            _ => {}
        }
    }
    Ok(Interfaces { imports, exports })
}
