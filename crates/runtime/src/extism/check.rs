//! What a plug-in must be before it is compiled and linked: a valid core module within the
//! host's compile limits (the components' pre-compile check, `crate::precheck`), importing only
//! functions of `extism:host/env` this host defines (each refusal says which import and why),
//! and, once compiled, exporting each of the manifest's methods as a function `() -> i32`.

use warden_call::text::{cut, escape};
use wasmparser::{Encoding, Parser, Payload, TypeRef};
use wasmtime::{ExternType, Module, ValType};

use crate::error::LoadError;
use crate::precheck::{Limits, walk_as};

/// The module a plug-in's host functions come from.
use super::abi::HOST_MODULE;
/// Where the Extism PDKs import user-defined host functions from (`#[host_fn]`).
const USER_MODULE: &str = "extism:host/user";
const WASI_P1: &str = "wasi_snapshot_preview1";
/// Most bytes of a name from the plug-in quoted in an error.
const NAME_SHOWN: usize = 128;

fn shown(name: &str) -> String {
    cut(&escape(name.as_bytes()), NAME_SHOWN)
}

/// Every function of WASI preview 1 (`wasi_snapshot_preview1`), all linked by Wasmtime's
/// implementation when the manifest asks for WASI.
const WASI_P1_NAMES: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// A plug-in that imports WASI preview 1 is refused unless its manifest asks for it
/// (`[extism] wasi = true`), the first such import named.
pub(crate) fn wasi_asked(module: &Module, asked: bool) -> Result<(), LoadError> {
    if asked {
        return Ok(());
    }
    match module.imports().find(|i| i.module() == WASI_P1) {
        Some(i) => Err(LoadError::Checked(format!(
            "the plug-in imports {WASI_P1}::{}, and its manifest does not ask for WASI \
             (`[extism]` `wasi = true`)",
            shown(i.name())
        ))),
        None => Ok(()),
    }
}

/// The pre-compile check: limits, validation, imports. No compile.
pub(crate) fn check(bytes: &[u8]) -> Result<(), LoadError> {
    walk_as(bytes, &Limits::HOST, Encoding::Module).map_err(|e| match e {
        LoadError::NotComponent(why) => LoadError::Checked(format!(
            "the entry is not a valid core WebAssembly module: {why}"
        )),
        other => other,
    })?;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| LoadError::Checked(e.to_string()))?;
        if let Payload::ImportSection(reader) = payload {
            for import in reader.into_imports() {
                let import = import.map_err(|e| LoadError::Checked(e.to_string()))?;
                import_allowed(import.module, import.name, &import.ty)?;
            }
        }
    }
    Ok(())
}

fn import_allowed(module: &str, name: &str, ty: &TypeRef) -> Result<(), LoadError> {
    let what = format!("{}::{}", shown(module), shown(name));
    let refuse = |why: String| {
        Err(LoadError::Checked(format!(
            "the plug-in imports {what}: {why}"
        )))
    };
    match module {
        HOST_MODULE if !matches!(ty, TypeRef::Func(_)) => {
            refuse("only functions come from extism:host/env".into())
        }
        HOST_MODULE if super::abi::NAMES.contains(&name) => Ok(()),
        HOST_MODULE => refuse(
            "not an Extism host function this host defines (an Extism PDK newer than 1.x?)".into(),
        ),
        USER_MODULE => refuse(
            "a user-defined host function (`#[host_fn]`); warden defines none, so the plug-in \
             cannot be loaded"
                .into(),
        ),
        // Whether this bundle's manifest asks for WASI is decided per bundle (`wasi_asked`).
        WASI_P1 if matches!(ty, TypeRef::Func(_)) && WASI_P1_NAMES.contains(&name) => Ok(()),
        WASI_P1 => refuse("not a function of WASI preview 1".into()),
        "env" | "extism:env" => refuse(
            "the host ABI of Extism before 1.0, which this host does not speak; rebuild with a \
             1.x PDK"
                .into(),
        ),
        _ => refuse("not an Extism host module (extism:host/env)".into()),
    }
}

/// The compiled module's export for each method, a function `() -> i32`.
pub(crate) fn exports(module: &Module, methods: &[String]) -> Result<(), LoadError> {
    for method in methods {
        let refuse = |why: &str| {
            Err(LoadError::Checked(format!(
                "the manifest lists method {:?}, but the plug-in {why}",
                shown(method)
            )))
        };
        match module.get_export(method) {
            None => return refuse("exports no such function"),
            Some(ExternType::Func(f)) => {
                let results: Vec<ValType> = f.results().collect();
                if f.params().len() != 0 || results.len() != 1 || !results[0].is_i32() {
                    return refuse(&format!(
                        "exports it as {f}, not as an Extism function `() -> i32`"
                    ));
                }
            }
            Some(_) => return refuse("exports it as something other than a function"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(imports: &str) -> Vec<u8> {
        wat::parse_str(format!(
            "(module {imports} (func (export \"run\") (result i32) i32.const 0))"
        ))
        .unwrap()
    }

    #[test]
    fn only_extism_host_functions_are_imported() {
        let ok = module(r#"(import "extism:host/env" "alloc" (func (param i64) (result i64)))"#);
        check(&ok).unwrap();
        // WASI passes the check; whether the manifest asked for it is decided per bundle.
        let wasi = module(
            r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))"#,
        );
        check(&wasi).unwrap();
        for (imports, says) in [
            (
                r#"(import "extism:host/user" "mine" (func (param i64) (result i64)))"#,
                "user-defined host function",
            ),
            (
                r#"(import "wasi_snapshot_preview1" "fd_wrote" (func (param i32 i32 i32 i32) (result i32)))"#,
                "not a function of WASI preview 1",
            ),
            (
                r#"(import "extism:host/env" "nope" (func))"#,
                "not an Extism host function",
            ),
            (
                r#"(import "extism:host/env" "memory" (memory 1))"#,
                "only functions",
            ),
            (r#"(import "env" "extism_alloc" (func))"#, "before 1.0"),
            (
                r#"(import "other" "f" (func))"#,
                "not an Extism host module",
            ),
        ] {
            let e = check(&module(imports)).unwrap_err().to_string();
            assert!(e.contains(says), "{e}");
        }
        let component = wat::parse_str("(component)").unwrap();
        let e = check(&component).unwrap_err().to_string();
        assert!(e.contains("a core module is required"), "{e}");
    }
}
