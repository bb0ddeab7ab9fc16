//! A component's top-level imports and exports, read with wasmparser (no Wasmtime needed).

use anyhow::{Context, Result};
use wasmparser::{
    ComponentAlias, ComponentExternalKind, ComponentOuterAliasKind, ComponentTypeRef, Parser,
    Payload,
};

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
    // Memories are counted per instance a component makes of a module (a module instantiated
    // twice needs its memory twice), by following each component's core module index space.
    // Whatever cannot be followed (a module imported) counts as nothing there; the total is
    // never below the sum over modules defined.
    let mut defined: u64 = 0;
    let mut stack: Vec<Frame> = vec![Frame::Component {
        modules: Vec::new(),
        instantiated: 0,
    }];
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("reading the component")? {
            Payload::ModuleSection { .. } => stack.push(Frame::Module { memory: 0 }),
            Payload::ComponentSection { .. } => stack.push(Frame::Component {
                modules: Vec::new(),
                instantiated: 0,
            }),
            Payload::End(_) => match stack.pop() {
                Some(Frame::Module { memory }) => {
                    if let Some(Frame::Component { modules, .. }) = stack.last_mut() {
                        modules.push(memory);
                    }
                }
                Some(Frame::Component { instantiated, .. }) => match stack.last_mut() {
                    Some(Frame::Component {
                        instantiated: outer,
                        ..
                    }) => *outer = outer.saturating_add(instantiated),
                    _ => f.memory_bytes = instantiated,
                },
                None => {}
            },
            Payload::ComponentImportSection(s) => {
                for import in s {
                    let import = import.context("reading an import")?;
                    if let (ComponentTypeRef::Module(_), Some(Frame::Component { modules, .. })) =
                        (import.ty, stack.last_mut())
                    {
                        modules.push(0);
                    }
                }
            }
            Payload::ComponentAliasSection(s) => {
                for alias in s {
                    let alias = alias.context("reading an alias")?;
                    let module = match alias {
                        ComponentAlias::Outer {
                            kind: ComponentOuterAliasKind::CoreModule,
                            count,
                            index,
                        } => Some(outer_module(&stack, count, index)),
                        // A module exported by a component instance: in the index space,
                        // its memory unknown here.
                        ComponentAlias::InstanceExport {
                            kind: ComponentExternalKind::Module,
                            ..
                        } => Some(0),
                        _ => None,
                    };
                    if let (Some(m), Some(Frame::Component { modules, .. })) =
                        (module, stack.last_mut())
                    {
                        modules.push(m);
                    }
                }
            }
            Payload::InstanceSection(s) => {
                for instance in s {
                    let instance = instance.context("reading a core instance")?;
                    if let (
                        wasmparser::Instance::Instantiate { module_index, .. },
                        Some(Frame::Component {
                            modules,
                            instantiated,
                        }),
                    ) = (instance, stack.last_mut())
                    {
                        let m = usize::try_from(module_index)
                            .ok()
                            .and_then(|i| modules.get(i).copied())
                            .unwrap_or(0);
                        *instantiated = instantiated.saturating_add(m);
                    }
                }
            }
            Payload::CodeSectionStart { count, size, .. } => {
                f.functions += u64::from(count);
                f.code_bytes += u64::from(size);
            }
            Payload::MemorySection(s) => {
                for m in s {
                    let m = m.context("reading a memory")?;
                    let page = m.page_size_log2.map_or(1u64 << 16, |l| 1u64 << l.min(16));
                    let bytes = m.initial.saturating_mul(page);
                    f.oversized |= !m.memory64 && bytes > 1 << 32;
                    defined = defined.saturating_add(bytes);
                    if let Some(Frame::Module { memory }) = stack.last_mut() {
                        *memory = memory.saturating_add(bytes);
                    }
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
    f.memory_bytes = f.memory_bytes.max(defined);
    Ok(f)
}

/// A level of [`footprint`]'s walk: a component (the memory of each module in its core
/// module index space, and what its instantiations add up to) or a module (its memory).
enum Frame {
    Component {
        modules: Vec<u64>,
        instantiated: u64,
    },
    Module {
        memory: u64,
    },
}

/// The memory of the module an outer alias names: `count` components out, index `index`.
fn outer_module(stack: &[Frame], count: u32, index: u32) -> u64 {
    let components: Vec<&Frame> = stack
        .iter()
        .filter(|f| matches!(f, Frame::Component { .. }))
        .collect();
    let Some(at) = components.len().checked_sub(1 + count as usize) else {
        return 0;
    };
    match components.get(at) {
        Some(Frame::Component { modules, .. }) => usize::try_from(index)
            .ok()
            .and_then(|i| modules.get(i).copied())
            .unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::footprint;

    const MIB: u64 = 1 << 20;

    #[test]
    fn memory_is_counted_for_every_instance_of_a_module() {
        // A 2 MiB module instantiated three times, and a 1 MiB one never instantiated.
        let c = wat::parse_str(
            r#"(component
                (core module $m (memory 32))
                (core module $unused (memory 16))
                (core instance (instantiate $m))
                (core instance (instantiate $m))
                (core instance (instantiate $m)))"#,
        )
        .unwrap();
        let f = footprint(&c).unwrap();
        assert_eq!(f.memory_bytes, 6 * MIB);
        assert!(!f.oversized);
        // A nested component's instances count too, and an outer alias names the outer module.
        let c = wat::parse_str(
            r#"(component
                (core module $m (memory 16))
                (core instance (instantiate $m))
                (component
                    (core module $n (memory 32))
                    (core instance (instantiate $n))
                    (alias outer 1 $m (core module $o))
                    (core instance (instantiate $o))))"#,
        )
        .unwrap();
        assert_eq!(footprint(&c).unwrap().memory_bytes, 4 * MIB);
        // Never below what the modules define, even when nothing is instantiated.
        let c = wat::parse_str(r#"(component (core module (memory 48)))"#).unwrap();
        assert_eq!(footprint(&c).unwrap().memory_bytes, 3 * MIB);
    }

    #[test]
    fn a_memory_over_4_gib_is_said() {
        let m = wat::parse_str(r#"(component (core module (memory 65537)))"#).unwrap();
        assert!(footprint(&m).unwrap().oversized);
    }
}
