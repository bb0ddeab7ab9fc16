//! A component's top-level imports and exports, read with wasmparser (no Wasmtime needed).

use anyhow::{Context, Result};
use wasmparser::{ComponentExternalKind, ComponentTypeRef, Parser, Payload};

/// Top-level imports and exports: (name, kind of item).
pub struct Interfaces {
    pub imports: Vec<(String, &'static str)>,
    pub exports: Vec<(String, &'static str)>,
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
                    imports.push((import.name.name.to_owned(), kind));
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
                    exports.push((export.name.name.to_owned(), kind));
                }
            }
            _ => {}
        }
    }
    Ok(Interfaces { imports, exports })
}

/// What a component costs before it runs, read from its core modules (every depth): the code
/// to compile and the linear memory its instances start with.
pub struct Footprint {
    /// Bytes of function bodies, which is what the compiler works through.
    pub code_bytes: u64,
    pub functions: u64,
    /// Linear memory the core modules declare at their start (initial pages), all together.
    pub memory_bytes: u64,
    /// A memory declares more than a 32-bit memory can hold (over 4 GiB): the component
    /// cannot be instantiated, whatever the budget.
    pub oversized: bool,
    /// Bytes of active data segments: the part of that memory filled from the component (a
    /// snapshot of an interpreter's heap, for componentize-js and componentize-py).
    pub data_bytes: u64,
}

/// Code bytes the compiler gets through per second per core: what `warden inspect`'s estimate
/// assumes. Measured on a quiet 2-core machine of this project: the componentize-js hello (9.2
/// MB of code) compiles in about 19 s, the componentize-py one (6.6 MB) in about 14 s; a busy
/// machine takes longer. Cranelift compiles functions in parallel.
pub const CODE_BYTES_PER_CORE_SECOND: u64 = 250_000;

/// Reads `bytes`' core modules: one pass of the parser, no validation (see [`interfaces`]).
pub fn footprint(bytes: &[u8]) -> Result<Footprint> {
    let mut f = Footprint {
        code_bytes: 0,
        functions: 0,
        memory_bytes: 0,
        data_bytes: 0,
        oversized: false,
    };
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("reading the component")? {
            Payload::CodeSectionStart { count, size, .. } => {
                f.functions += u64::from(count);
                f.code_bytes += u64::from(size);
            }
            Payload::MemorySection(s) => {
                for m in s {
                    let m = m.context("reading a memory")?;
                    let page = m.page_size_log2.map_or(1u64 << 16, |l| 1u64 << l.min(16));
                    f.oversized |= !m.memory64 && m.initial.saturating_mul(page) > 1 << 32;
                    f.memory_bytes = f
                        .memory_bytes
                        .saturating_add(m.initial.saturating_mul(page));
                }
            }
            Payload::DataSection(s) => {
                for d in s {
                    let d = d.context("reading a data segment")?;
                    if matches!(d.kind, wasmparser::DataKind::Active { .. }) {
                        f.data_bytes += d.data.len() as u64;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(f)
}
