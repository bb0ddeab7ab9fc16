//! An Extism plug-in's (a core module's) imports and exports, read with wasmparser (no
//! Wasmtime), and what each host function it imports gives it under a grant.

use anyhow::{Context, Result};
use wasmparser::{ExternalKind, FuncType, Parser, Payload, TypeRef};

/// Imports (`module::name`, signature) and exported functions (name, signature).
pub struct Interfaces {
    pub imports: Vec<(String, String, String)>,
    pub exports: Vec<(String, String)>,
}

fn signature(f: &FuncType) -> String {
    let list = |t: &[wasmparser::ValType]| {
        t.iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!("({}) -> ({})", list(f.params()), list(f.results()))
}

/// One pass of the parser over a core module: its function types, imports and exports.
pub fn interfaces(bytes: &[u8]) -> Result<Interfaces> {
    let mut types: Vec<Option<FuncType>> = Vec::new();
    let mut funcs: Vec<u32> = Vec::new();
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.context("reading the module")? {
            Payload::Version { encoding, .. } if encoding != wasmparser::Encoding::Module => {
                anyhow::bail!("the entry is not a core WebAssembly module");
            }
            Payload::TypeSection(s) => {
                for group in s {
                    for ty in group.context("reading a type")?.into_types() {
                        types.push(match &ty.composite_type.inner {
                            wasmparser::CompositeInnerType::Func(f) => Some(f.clone()),
                            _ => None,
                        });
                    }
                }
            }
            Payload::ImportSection(s) => {
                for import in s.into_imports() {
                    let import = import.context("reading an import")?;
                    let sig = match import.ty {
                        TypeRef::Func(i) => {
                            funcs.push(i);
                            types
                                .get(i as usize)
                                .and_then(Option::as_ref)
                                .map_or_else(|| "function".into(), signature)
                        }
                        TypeRef::Memory(_) => "memory".into(),
                        TypeRef::Table(_) => "table".into(),
                        TypeRef::Global(_) => "global".into(),
                        _ => "other".into(),
                    };
                    imports.push((import.module.to_string(), import.name.to_string(), sig));
                }
            }
            Payload::FunctionSection(s) => {
                for f in s {
                    funcs.push(f.context("reading a function")?);
                }
            }
            Payload::ExportSection(s) => {
                for export in s {
                    let export = export.context("reading an export")?;
                    if export.kind == ExternalKind::Func {
                        let sig = funcs
                            .get(export.index as usize)
                            .and_then(|t| types.get(*t as usize))
                            .and_then(Option::as_ref)
                            .map_or_else(|| "function".into(), signature);
                        exports.push((export.name.to_string(), sig));
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Interfaces { imports, exports })
}

/// What importing `module::name` (of signature `sig`, or the kind of item) gives the plug-in
/// under `eff`: the same decisions as the load's check (`warden_runtime`'s).
pub fn import_fate(
    module: &str,
    name: &str,
    sig: &str,
    eff: &warden_manifest::Effective,
    wasi: bool,
) -> String {
    let list = |items: Vec<String>| items.join(", ");
    match (module, name) {
        ("extism:host/env", _) if !sig.starts_with('(') => {
            "REFUSED at load: only functions come from extism:host/env".into()
        }
        ("extism:host/env", n) if !warden_host::EXTISM_HOST_FUNCTIONS.contains(&n) => {
            "REFUSED at load: not an Extism host function this host defines".into()
        }
        ("extism:host/env", "config_get") => {
            if eff.secrets.is_empty() {
                "DENIED: no secret granted (every key reads as absent; each read audited as a denial)"
                    .into()
            } else {
                format!(
                    "granted: the secrets {} (any other key reads as absent, audited as a denial)",
                    list(eff.secrets.iter().map(|s| s.to_string()).collect())
                )
            }
        }
        ("extism:host/env", "http_request") => match &eff.network {
            Some(n) => format!(
                "granted: requests to {} (any other host ends the call, audited; redirects not followed)",
                list(n.allowed_hosts.iter().map(|h| h.to_string()).collect())
            ),
            None => "DENIED: network not granted (every request ends the call, audited)".into(),
        },
        ("extism:host/env", "var_get" | "var_set") => {
            "allowed: vars of this call only (at most 1 MiB)".into()
        }
        ("extism:host/env", n) if n.starts_with("log_") || n == "get_log_level" => {
            "allowed: into the call's log (info and above)".into()
        }
        ("extism:host/env", "http_status_code" | "http_headers") => "allowed".into(),
        ("extism:host/env", _) => "allowed: Extism memory, input and output of this call".into(),
        ("extism:host/user", _) => {
            "REFUSED at load: a user-defined host function (warden defines none)".into()
        }
        ("wasi_snapshot_preview1", _) if !wasi => {
            "REFUSED at load: the manifest does not ask for WASI ([extism] wasi = true)".into()
        }
        ("wasi_snapshot_preview1", n) if n.starts_with("sock_") => {
            "allowed, and refused when called: no sockets are given".into()
        }
        ("wasi_snapshot_preview1", n) if n.starts_with("path_") => {
            format!("folders: {}", crate::describe::mounts(eff))
        }
        (
            "wasi_snapshot_preview1",
            "args_get" | "args_sizes_get" | "environ_get" | "environ_sizes_get",
        ) => "allowed: empty".into(),
        ("wasi_snapshot_preview1", "fd_write") if eff.mounts.is_empty() => {
            "allowed: stdout and stderr into the call's log".into()
        }
        ("wasi_snapshot_preview1", "fd_write") => {
            "allowed: stdout and stderr into the call's log, files of the granted folders \
             (read-write ones under the file quota)"
                .into()
        }
        ("wasi_snapshot_preview1", _) => "allowed".into(),
        _ => "REFUSED at load: not an Extism host function".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_imports_and_function_exports_with_signatures() {
        let wasm = wat::parse_str(
            r#"(module
                (import "extism:host/env" "alloc" (func (param i64) (result i64)))
                (import "extism:host/user" "mine" (func))
                (memory (export "memory") 1)
                (func (export "run") (result i32) i32.const 0))"#,
        )
        .unwrap();
        let i = interfaces(&wasm).unwrap();
        assert_eq!(
            i.imports,
            [
                (
                    "extism:host/env".into(),
                    "alloc".into(),
                    "(i64) -> (i64)".into()
                ),
                ("extism:host/user".into(), "mine".into(), "() -> ()".into()),
            ]
        );
        assert_eq!(i.exports, [("run".to_string(), "() -> (i32)".to_string())]);
        assert!(interfaces(&wat::parse_str("(component)").unwrap()).is_err());
    }
}
