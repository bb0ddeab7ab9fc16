//! The check before compiling: one pass of wasmparser over the component's bytes (nested modules
//! and components included, validated, no Wasmtime) decides which world the component claims
//! and refuses a shape this host will not spend a compile on.
//!
//! Compiling is the expensive step of a load: Cranelift's time and memory grow with the code it
//! is given (a signed 30.5 MB component of 100,000 functions and no exports was compiled for
//! 20.7 s and 664 MB before the old check, after the compile, refused it). Section headers and
//! counts are checked as they are met, so a component over a count is refused in milliseconds;
//! bodies are validated one at a time, in memory bounded by the largest one.
//!
//! The limits rest on measurements of real components, set at 2.3-4x above the largest (see
//! each constant). What passes here is then validated and compiled by Wasmtime, and the world
//! it claims is checked against its types when it is pre-linked ([`crate::Runtime::prepare`]):
//! this pass decides the world, the pre-link confirms it. Measured with this module's walk
//! on the components' files:
//!
//! | component | size | functions | code bytes | largest body | modules | core instances | canonicals |
//! |---|---|---|---|---|---|---|---|
//! | componentize-py 0.25.1 hello, rpc world | 18.3 MB | 13,353 | 6.57 MB | 427 KB | 14 | 14 | 123 |
//! | componentize-py 0.25.1 hello, `wasi:http/proxy` | 18.4 MB | 13,485 | 6.59 MB | 427 KB | 14 | 14 | 219 |
//! | componentize-js 0.23.0 hello, rpc world | 12.0 MB | 12,693 | 9.23 MB | 172 KB | 4 | 4 | 80 |
//! | componentize-js 0.23.0 hello, `wasi:http/proxy` | 13.0 MB | 12,806 | 9.24 MB | 172 KB | 4 | 4 | 123 |
//! | this repository's largest guest (`tests/guests/hostile`) | 0.2 MB | 568 | 0.14 MB | 15 KB | 3 | 3 | 117 |
//!
//! A second round of attacks compiled tiny signed components for minutes: a few KB of code can
//! cost what a large body does, through per-function shapes (locals, parameters, nested
//! blocks, operand stack depth). So each body is also validated here (wasmparser, all
//! features: what Wasmtime would refuse is refused now) and its shape bounded, per function and
//! summed (squared where compile time grows with the square). The same components:
//!
//! | component | locals (most in one) | params+results (most) | deepest nesting, sum of squares | highest stack, sum of squares | variables x blocks (most in one) |
//! |---|---|---|---|---|---|
//! | componentize-py hello, http | 48,054 (271) | 42,353 (19) | 782, 1,334,819 | 54, 280,619 | 4,668,818 (163,170) |
//! | componentize-js hello, http | 52,083 (118) | 44,491 (18) | 457, 1,341,915 | 64, 321,267 | 7,557,047 (421,032) |
//! | `tests/guests/hostile` | 1,298 (22) | 1,731 (15) | 68, 22,937 | 16, 11,182 | 76,212 (14,526) |
//!
//! This pass takes 0.5-0.75 s on the 18 MB components (validation included), once per content
//! hash per process.
//!
//! Each of the four real components passes and compiles in 32-45 s on one compile thread of a
//! busy 2-core machine, peaking at 375-413 MiB. Components built to sit just under the limits
//! (and so compiled before the pre-link refuses them) measured: 40,000 functions of 620 bytes
//! (25 MB of code) 57 s and 307 MiB; 23 bodies of 1 MiB each 113 s and 461 MiB; one 1 MiB body
//! 6 s and 322 MiB. That is the most a signed component can cost a load, one compile at a time
//! ([`crate::RuntimeConfig::max_concurrent_compiles`]) on the compile threads only.

use warden_call::text::{cut, escape};
use wasmparser::{
    ComponentExternalKind, Encoding, FuncValidatorAllocations, FunctionBody, Instance, Operator,
    Parser, Payload, ValidPayload, Validator, WasmFeatures, WasmModuleResources as _,
};

use crate::error::LoadError;
use crate::world::WorldKind;

/// The interface an rpc extension exports (any version; the pre-link checks the one we bind).
const RPC_EXPORT: &str = "warden:extension/handler@";
/// The interface an http extension exports (any 0.2 version; the pre-link checks its type).
const HTTP_EXPORT: &str = "wasi:http/incoming-handler@";

/// Defined core functions, all modules together. Each is one Cranelift compile: this bounds
/// the compile's time and the compiled code's size. Real components: componentize-py hello
/// 13,485, componentize-js hello 12,806 (3x); a Rust guest a few hundred. The finding's bomb
/// had 100,000.
pub(crate) const MAX_FUNCTIONS: u64 = 40_000;
/// Bytes of function bodies, all modules together: what Cranelift reads, and what compile time
/// and memory grow with. Real components: componentize-js hello 9.24 MB (2.7x),
/// componentize-py hello 6.59 MB (its 18 MB are mostly data: the Python library).
pub(crate) const MAX_CODE_BYTES: u64 = 24 << 20;
/// Bytes of the largest single function body. Compiling one function is not parallel and
/// Cranelift's register allocation grows faster than linearly with a function's size, so one
/// huge body is a bomb of its own (one body of 1 MiB took 6 s and 322 MiB). Real components:
/// 427 KB (componentize-py, 2.5x), 172 KB (componentize-js).
pub(crate) const MAX_FUNCTION_BYTES: u64 = 1 << 20;
/// Core modules, nested ones included: each is compiled as a unit with its own metadata. Real
/// components: 14 (componentize-py: CPython, its libraries, the adapter; 2.3x), 4
/// (componentize-js), 3 (a Rust guest).
pub(crate) const MAX_MODULES: u64 = 32;
/// Nested components (the top level is not counted). Real components: 2 (componentize-py;
/// 4x), 1 (componentize-js, a Rust guest).
pub(crate) const MAX_COMPONENTS: u64 = 8;
/// Core instantiations, counted where they are written (a nested component instantiated twice
/// counts once here; the pooling allocator's per-component limit, the same number, counts
/// every one when the component is instantiated). Real components: 14 (componentize-py; 2.3x).
pub(crate) const MAX_CORE_INSTANCES: u64 = CORE_INSTANCES_PER_COMPONENT as u64;
/// The same bound for the engine's pooling allocator (per component, at instantiation).
pub(crate) const CORE_INSTANCES_PER_COMPONENT: u32 = 32;
/// Canonical functions (lifts, lowers, resource and task built-ins): Wasmtime compiles a
/// trampoline for each, so thousands of them are a compile bomb without any function body.
/// Real components: 219 (componentize-py http; 3.7x), 123 (componentize-js http), 117 (the
/// hostile Rust guest).
pub(crate) const MAX_CANONICALS: u64 = 800;

/// Locals one function declares. Cranelift gives each a variable, so its time grows with them:
/// 1,000 functions declaring 50,000 locals each (8 KB of code) compiled for 6.3 s, 40,000 of
/// them (320 KB) for 469 s (red team, round 2). Real components: see the table above.
pub(crate) const MAX_FUNCTION_LOCALS: u64 = 4_096;
/// Locals declared by all functions together (real: 52,083; 9.6x).
pub(crate) const MAX_LOCALS: u64 = 500_000;
/// Parameters plus results of one defined function. Each is a value every call and trampoline
/// moves: 1,000 functions of 1,000 parameters (7 KB) compiled for 54 s.
pub(crate) const MAX_FUNCTION_ARITY: u64 = 128;
/// Parameters plus results of all defined functions together (real: 44,491; 4.5x).
pub(crate) const MAX_ARITY: u64 = 200_000;
/// Blocks open at once in one function. Compile time grows with the square of it: one body of
/// 100,000 nested blocks (300 KB) compiled for 31 s, 340,000 (1 MB) for 310 s.
pub(crate) const MAX_NESTING: u64 = 4_096;
/// The sum over functions of the square of their deepest nesting (the quadratic cost above,
/// for the whole component; real: 1,341,915, 37x; about 0.15 s of compile at the limit).
pub(crate) const MAX_NESTING_COST: u64 = 50_000_000;
/// Values on one function's operand stack at once. Cost grows with its square: 20,000 values
/// (152 KB) compiled for 57 s, 120,000 for more than 900 s.
pub(crate) const MAX_STACK: u64 = 1_024;
/// The sum over functions of the square of their highest operand stack (real: 321,267, 16x;
/// under a second of compile at the limit).
pub(crate) const MAX_STACK_COST: u64 = 5_000_000;

/// Variables (locals and parameters) times blocks (`block`, `loop`, `if`, `else`, `try`...)
/// in one function: what Cranelift's SSA construction grows with, in time and in memory. One
/// body of 4,096 locals and 343,000 blocks compiled for 405 s in 5.4 GiB; 20,000 `if/else` for
/// 88 s in 3.1 GiB (red team, round 3); each `br_if` and branch-table target makes a block
/// too (one `block` of 60,000 `br_if`: 199 s, 984 MiB; round 4). Real: 421,032
/// (componentize-js; 2.4x), 163,170 (componentize-py). At the limit a function costs about a
/// second.
pub(crate) const MAX_SSA: u64 = 1_000_000;
/// Variables times blocks, all functions together. Real: 7,557,047 (componentize-js; 2.1x),
/// 4,668,818 (componentize-py).
pub(crate) const MAX_SSA_COST: u64 = 16_000_000;

/// What the walk counts: the shape the limits bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Shape {
    pub functions: u64,
    pub code_bytes: u64,
    pub largest_body: u64,
    pub modules: u64,
    pub components: u64,
    pub core_instances: u64,
    pub canonicals: u64,
    pub locals: u64,
    pub most_locals: u64,
    pub arity: u64,
    pub most_arity: u64,
    pub deepest_nesting: u64,
    pub nesting_cost: u64,
    pub highest_stack: u64,
    pub stack_cost: u64,
    pub most_ssa: u64,
    pub ssa_cost: u64,
    /// Names of the first top-level exports ([`EXPORTS_NAMED`] at most), in order.
    pub exports: Vec<String>,
    /// How many top-level exports there are.
    pub export_count: u64,
    /// The top-level instance (interface) exports named like a world's export: only an
    /// instance can be one.
    pub world_exports: Vec<String>,
}

/// The bounds a walk enforces.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub functions: u64,
    pub code_bytes: u64,
    pub function_bytes: u64,
    pub modules: u64,
    pub components: u64,
    pub core_instances: u64,
    pub canonicals: u64,
    pub function_locals: u64,
    pub locals: u64,
    pub function_arity: u64,
    pub arity: u64,
    pub nesting: u64,
    pub nesting_cost: u64,
    pub stack: u64,
    pub stack_cost: u64,
    pub ssa: u64,
    pub ssa_cost: u64,
}

impl Limits {
    /// This host's limits.
    pub(crate) const HOST: Limits = Limits {
        functions: MAX_FUNCTIONS,
        code_bytes: MAX_CODE_BYTES,
        function_bytes: MAX_FUNCTION_BYTES,
        modules: MAX_MODULES,
        components: MAX_COMPONENTS,
        core_instances: MAX_CORE_INSTANCES,
        canonicals: MAX_CANONICALS,
        function_locals: MAX_FUNCTION_LOCALS,
        locals: MAX_LOCALS,
        function_arity: MAX_FUNCTION_ARITY,
        arity: MAX_ARITY,
        nesting: MAX_NESTING,
        nesting_cost: MAX_NESTING_COST,
        stack: MAX_STACK,
        stack_cost: MAX_STACK_COST,
        ssa: MAX_SSA,
        ssa_cost: MAX_SSA_COST,
    };
}

/// The world `bytes` claims, or why it will not be compiled. No compile, no validation.
pub(crate) fn check(bytes: &[u8]) -> Result<WorldKind, LoadError> {
    walk(bytes, &Limits::HOST)?.world()
}

impl Shape {
    /// The one decision of which world a component is: rpc if it exports warden's handler,
    /// else http if it exports `wasi:http/incoming-handler`, else none we know.
    pub(crate) fn world(&self) -> Result<WorldKind, LoadError> {
        if let Some(kind) = world_of(self.world_exports.iter().map(String::as_str)) {
            Ok(kind)
        } else {
            let mut named = self.exports.join(", ");
            let more = self.export_count.saturating_sub(self.exports.len() as u64);
            if named.is_empty() {
                named = "nothing".into();
            } else if more > 0 {
                named.push_str(&format!(" and {more} more"));
            }
            Err(LoadError::NoKnownWorld { exports: named })
        }
    }
}

/// The one rule deciding a world from the names of a component's top-level instance exports
/// (here, and for compiled code loaded from the cache): rpc if one is warden's handler, else
/// http if one is `wasi:http/incoming-handler`.
pub(crate) fn world_of<'a>(
    instance_exports: impl Iterator<Item = &'a str> + Clone,
) -> Option<WorldKind> {
    let exports = |prefix: &str| instance_exports.clone().any(|e| e.starts_with(prefix));
    if exports(RPC_EXPORT) {
        Some(WorldKind::Rpc)
    } else if exports(HTTP_EXPORT) {
        Some(WorldKind::Http)
    } else {
        None
    }
}

/// Names at most this many exports in an error (a hostile component may have thousands).
const EXPORTS_NAMED: usize = 16;
/// Shows at most this many bytes of each (a name may be 100,000 bytes long).
const EXPORT_NAME_SHOWN: usize = 128;

/// One pass over `bytes`, refusing as soon as a count goes over `limits`.
pub(crate) fn walk(bytes: &[u8], limits: &Limits) -> Result<Shape, LoadError> {
    walk_as(bytes, limits, Encoding::Component)
}

/// [`walk`] of a binary that must be `encoding` at its top level: a component, or a core
/// module (an Extism plug-in, `crate::extism`).
pub(crate) fn walk_as(
    bytes: &[u8],
    limits: &Limits,
    expected: Encoding,
) -> Result<Shape, LoadError> {
    let bad = |e: wasmparser::BinaryReaderError| {
        LoadError::NotComponent(cut(&escape(e.to_string().as_bytes()), INVALID_SHOWN))
    };
    let mut s = Shape::default();
    // Nested modules and components are walked inline; only depth 0 is the interface.
    let mut depth = 0usize;
    let mut first = true;
    // Validation runs along (what Wasmtime would refuse anyway is refused here, before any
    // compile), and hands each function body over with its types, for the per-function costs.
    let mut validator = Validator::new_with_features(WasmFeatures::all());
    let mut allocs = FuncValidatorAllocations::default();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(bad)?;
        if let ValidPayload::Func(func, body) = validator.payload(&payload).map_err(invalid)? {
            allocs = function_costs(func, &body, allocs, &mut s, limits)?;
        }
        match payload {
            Payload::Version { encoding, .. } if first && encoding != expected => {
                return Err(LoadError::NotComponent(
                    if expected == Encoding::Component {
                        "it is a core module; a component is required"
                    } else {
                        "it is a component; a core module is required"
                    }
                    .into(),
                ));
            }
            Payload::ModuleSection { .. } => {
                depth += 1;
                s.modules += 1;
                over("core modules", s.modules, limits.modules)?;
            }
            Payload::ComponentSection { .. } => {
                depth += 1;
                s.components += 1;
                over("nested components", s.components, limits.components)?;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::CodeSectionStart { count, size, .. } => {
                s.functions += u64::from(count);
                over("defined functions", s.functions, limits.functions)?;
                s.code_bytes += u64::from(size);
                over("bytes of function code", s.code_bytes, limits.code_bytes)?;
            }
            Payload::CodeSectionEntry(body) => {
                let len = body.range().len() as u64;
                s.largest_body = s.largest_body.max(len);
                over(
                    "bytes in one function body",
                    s.largest_body,
                    limits.function_bytes,
                )?;
            }
            Payload::InstanceSection(reader) => {
                for instance in reader {
                    if let Instance::Instantiate { .. } = instance.map_err(bad)? {
                        s.core_instances += 1;
                    }
                }
                over("core instances", s.core_instances, limits.core_instances)?;
            }
            Payload::ComponentCanonicalSection(reader) => {
                s.canonicals += u64::from(reader.count());
                over("canonical functions", s.canonicals, limits.canonicals)?;
            }
            Payload::ComponentExportSection(reader) if depth == 0 => {
                for export in reader {
                    let export = export.map_err(bad)?;
                    let name = export.name.name;
                    s.export_count += 1;
                    if s.exports.len() < EXPORTS_NAMED {
                        // Not validated yet: the name may hold anything, escape it.
                        s.exports
                            .push(cut(&escape(name.as_bytes()), EXPORT_NAME_SHOWN));
                    }
                    if export.kind == ComponentExternalKind::Instance
                        && (name.starts_with(RPC_EXPORT) || name.starts_with(HTTP_EXPORT))
                    {
                        s.world_exports.push(name.to_string());
                    }
                }
            }
            _ => {}
        }
        first = false;
    }
    Ok(s)
}

/// Validation errors quote the component (an export name may hold terminal escapes or be
/// 100,000 bytes long): escaped and cut.
fn invalid(e: wasmparser::BinaryReaderError) -> LoadError {
    LoadError::NotComponent(format!(
        "it does not validate: {}",
        cut(&escape(e.to_string().as_bytes()), INVALID_SHOWN)
    ))
}

/// Most bytes of a validation error shown.
const INVALID_SHOWN: usize = 300;

/// Validates one function body and adds what its compile will cost to `s`: its locals, its
/// type's arity, its deepest nesting and highest operand stack (each bounded on its own, and
/// squared into the whole component's cost). Returns the allocations for the next function.
fn function_costs(
    func: wasmparser::FuncToValidate<wasmparser::ValidatorResources>,
    body: &FunctionBody<'_>,
    allocs: FuncValidatorAllocations,
    s: &mut Shape,
    limits: &Limits,
) -> Result<FuncValidatorAllocations, LoadError> {
    let mut v = func.into_validator(allocs);
    let resources = v.resources();
    let arity = resources
        .type_id_of_function(v.index())
        .and_then(
            |id| match &resources.sub_type_at_id(id).composite_type.inner {
                wasmparser::CompositeInnerType::Func(t) => {
                    Some((t.params().len() + t.results().len()) as u64)
                }
                _ => None,
            },
        )
        .unwrap_or(0);
    s.most_arity = s.most_arity.max(arity);
    over(
        "parameters and results in one function",
        arity,
        limits.function_arity,
    )?;
    s.arity += arity;
    over(
        "parameters and results of all functions",
        s.arity,
        limits.arity,
    )?;

    let mut locals = body.get_locals_reader().map_err(bad_body)?;
    let mut declared = 0u64;
    for _ in 0..locals.get_count() {
        let offset = locals.original_position();
        let (count, ty) = locals.read().map_err(bad_body)?;
        declared += u64::from(count);
        // Checked before the validator allocates anything for them.
        over("locals in one function", declared, limits.function_locals)?;
        v.define_locals(offset, count, ty).map_err(invalid)?;
    }
    s.most_locals = s.most_locals.max(declared);
    s.locals += declared;
    over("locals of all functions", s.locals, limits.locals)?;

    let mut ops = body.get_operators_reader().map_err(bad_body)?;
    let (mut nesting, mut stack, mut blocks) = (0u64, 0u64, 0u64);
    let variables = declared + arity;
    while !ops.eof() {
        let offset = ops.original_position();
        let op = ops.read().map_err(bad_body)?;
        // Every operator that makes a new block (or a new edge into one) in Cranelift: the
        // structured ones, and each conditional branch and branch-table target (round 4: one
        // `block` of 60,000 `br_if` with 4,096 locals compiled for 199 s in 984 MiB).
        let made = match &op {
            Operator::Block { .. }
            | Operator::Loop { .. }
            | Operator::If { .. }
            | Operator::Else
            | Operator::TryTable { .. }
            | Operator::Try { .. }
            | Operator::Catch { .. }
            | Operator::CatchAll
            | Operator::BrIf { .. }
            | Operator::BrOnNull { .. }
            | Operator::BrOnNonNull { .. }
            | Operator::BrOnCast { .. }
            | Operator::BrOnCastFail { .. } => 1,
            Operator::BrTable { targets } => u64::from(targets.len()) + 1,
            _ => 0,
        };
        if made > 0 {
            blocks += made;
            // Cranelift's SSA construction keeps, per block, what it knows of each variable:
            // its time and memory grow with variables x blocks (one body of 4,096 locals and
            // 343,000 blocks: 405 s and 5.4 GiB; red team, round 3).
            over(
                "variables x blocks in one function",
                variables.saturating_mul(blocks),
                limits.ssa,
            )?;
        }
        v.op(offset, &op).map_err(invalid)?;
        nesting = nesting.max(u64::from(v.control_stack_height()));
        stack = stack.max(u64::from(v.operand_stack_height()));
        over("nested blocks in one function", nesting, limits.nesting)?;
        over(
            "values on one function's operand stack",
            stack,
            limits.stack,
        )?;
    }
    ops.finish().map_err(bad_body)?;
    let ssa = variables.saturating_mul(blocks);
    s.most_ssa = s.most_ssa.max(ssa);
    s.ssa_cost = s.ssa_cost.saturating_add(ssa);
    over(
        "variables x blocks of all functions",
        s.ssa_cost,
        limits.ssa_cost,
    )?;
    s.deepest_nesting = s.deepest_nesting.max(nesting);
    s.highest_stack = s.highest_stack.max(stack);
    s.nesting_cost += nesting * nesting;
    s.stack_cost += stack * stack;
    over(
        "nesting cost (sum of squared depths)",
        s.nesting_cost,
        limits.nesting_cost,
    )?;
    over(
        "operand stack cost (sum of squared heights)",
        s.stack_cost,
        limits.stack_cost,
    )?;
    Ok(v.into_allocations())
}

fn bad_body(e: wasmparser::BinaryReaderError) -> LoadError {
    LoadError::NotComponent(cut(&escape(e.to_string().as_bytes()), INVALID_SHOWN))
}

/// Refuses `value` of `limit` above `max`.
fn over(limit: &'static str, value: u64, max: u64) -> Result<(), LoadError> {
    if value > max {
        Err(LoadError::TooLarge { limit, value, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::{Duration, Instant};

    use super::*;

    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn section(out: &mut Vec<u8>, id: u8, body: &[u8]) {
        out.push(id);
        leb(out, body.len());
        out.extend_from_slice(body);
    }

    /// A core module of `funcs` functions `() -> i32`, each body `body` bytes or a few more
    /// (`i32.const 0` then `i32.const 1; i32.add` repeated): written byte by byte, because
    /// the text format would take longer to parse than the check under test.
    pub(crate) fn module(funcs: usize, body: usize) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        section(&mut m, 1, &[1, 0x60, 0, 1, 0x7f]);
        let mut f = Vec::new();
        leb(&mut f, funcs);
        f.resize(f.len() + funcs, 0);
        section(&mut m, 3, &f);
        let mut b = vec![0, 0x41, 0];
        while b.len() + 1 < body {
            b.extend_from_slice(&[0x41, 1, 0x6a]);
        }
        b.push(0x0b);
        let mut code = Vec::with_capacity(funcs * (b.len() + 3) + 5);
        leb(&mut code, funcs);
        for _ in 0..funcs {
            leb(&mut code, b.len());
            code.extend_from_slice(&b);
        }
        section(&mut m, 10, &code);
        m
    }

    /// A component of `modules`, exporting an empty instance as `export` if given.
    pub(crate) fn component(modules: &[Vec<u8>], export: Option<&str>) -> Vec<u8> {
        let mut c = b"\0asm\x0d\0\x01\0".to_vec();
        for m in modules {
            section(&mut c, 1, m);
        }
        if let Some(name) = export {
            // One instance made of no exports, exported under `name`.
            section(&mut c, 5, &[1, 0x01, 0]);
            let mut e = vec![1, 0];
            leb(&mut e, name.len());
            e.extend_from_slice(name.as_bytes());
            e.extend_from_slice(&[0x05, 0, 0]);
            section(&mut c, 11, &e);
        }
        c
    }

    const RPC: &str = "warden:extension/handler@0.1.0";
    const HTTP: &str = "wasi:http/incoming-handler@0.2.12";

    fn too_large(e: LoadError) -> (&'static str, u64, u64) {
        match e {
            LoadError::TooLarge { limit, value, max } => (limit, value, max),
            other => panic!("expected TooLarge, got {other}"),
        }
    }

    /// The finding's bomb: about 30 MB of 100,000 functions and no exports.
    #[test]
    fn the_compile_bomb_is_refused_in_milliseconds() {
        let bomb = component(&[module(100_000, 300)], None);
        assert!(bomb.len() > 30_000_000, "{}", bomb.len());
        let started = Instant::now();
        let e = check(&bomb).unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            too_large(e),
            ("defined functions", 100_000, MAX_FUNCTIONS),
            "refused at the code section's header"
        );
        assert!(took < Duration::from_millis(200), "{took:?}");
        // Under the limits it is refused for its exports, after one pass.
        let exportless = component(&[module(1_000, 300)], None);
        let e = check(&exportless).unwrap_err();
        assert!(
            matches!(&e, LoadError::NoKnownWorld { exports } if exports == "nothing"),
            "{e}"
        );
    }

    #[test]
    fn the_world_is_decided_by_top_level_instance_exports() {
        let m = || vec![module(1, 10)];
        assert_eq!(check(&component(&m(), Some(RPC))).unwrap(), WorldKind::Rpc);
        assert_eq!(
            check(&component(&m(), Some(HTTP))).unwrap(),
            WorldKind::Http
        );
        let both = wat::parse_str(format!(
            r#"(component (instance $i) (export "{HTTP}" (instance $i)) (export "{RPC}" (instance $i)))"#
        ))
        .unwrap();
        assert_eq!(check(&both).unwrap(), WorldKind::Rpc);
        // A function under the interface's name is not the interface.
        let func = wat::parse_str(format!(
            r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "{RPC}" (func $f)))"#
        ))
        .unwrap();
        let e = check(&func).unwrap_err();
        assert!(matches!(e, LoadError::NoKnownWorld { .. }), "{e}");
        // A nested component's exports are not the component's.
        let nested = wat::parse_str(format!(
            r#"(component (component (instance $i) (export "{RPC}" (instance $i))))"#
        ))
        .unwrap();
        let e = check(&nested).unwrap_err();
        assert!(
            matches!(&e, LoadError::NoKnownWorld { exports } if exports == "nothing"),
            "{e}"
        );
    }

    /// Export names are not validated before this check: the error escapes and cuts them.
    #[test]
    fn export_names_in_the_error_are_escaped_and_cut() {
        // Not a valid name: the validator's error quotes it, escaped.
        let e = check(&component(&[module(1, 10)], Some("\x1b[31mred\u{202e}")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\\u{1b}[31mred\\u{202e}") && !e.contains('\x1b'),
            "{e}"
        );
        // A valid name of 100,000 bytes: cut in the error.
        let long = "a".repeat(100_000);
        let e = check(&component(&[module(1, 10)], Some(&long)))
            .unwrap_err()
            .to_string();
        assert!(e.len() < 400, "{}", e.len());
        let many = (0..40)
            .map(|i| format!(r#"(export "e{i}" (instance $i))"#))
            .collect::<String>();
        let wasm = wat::parse_str(format!("(component (instance $i) {many})")).unwrap();
        let e = check(&wasm).unwrap_err().to_string();
        assert!(e.ends_with("e14, e15 and 24 more"), "{e}");
    }

    #[test]
    fn core_modules_and_garbage_are_not_components() {
        let e = check(&module(1, 10)).unwrap_err();
        assert!(matches!(e, LoadError::NotComponent(_)), "{e}");
        let e = check(b"\0asm\x0d\0\x01\0\x01\xff\xff").unwrap_err();
        assert!(matches!(e, LoadError::NotComponent(_)), "{e}");
        let e = check(b"not wasm").unwrap_err();
        assert!(matches!(e, LoadError::NotComponent(_)), "{e}");
    }

    #[test]
    fn function_count_and_code_size_limits_hold_at_the_boundary() {
        let funcs = usize::try_from(MAX_FUNCTIONS).unwrap();
        assert!(check(&component(&[module(funcs, 3)], Some(RPC))).is_ok());
        let e = check(&component(&[module(funcs + 1, 3)], Some(RPC))).unwrap_err();
        assert_eq!(too_large(e).0, "defined functions");
        // Split over two modules, counted together.
        let half = funcs / 2 + 1;
        let e = check(&component(&[module(half, 3), module(half, 3)], Some(RPC))).unwrap_err();
        assert_eq!(too_large(e).0, "defined functions");
        // Largest body: one byte over.
        let body = usize::try_from(MAX_FUNCTION_BYTES).unwrap();
        let e = check(&component(&[module(1, body + 1)], Some(HTTP))).unwrap_err();
        let (limit, value, max) = too_large(e);
        assert_eq!(
            (limit, max),
            ("bytes in one function body", MAX_FUNCTION_BYTES)
        );
        assert!(value > MAX_FUNCTION_BYTES);
        // Code bytes: bodies each under the per-function limit, together over the total.
        let n = usize::try_from(MAX_CODE_BYTES / MAX_FUNCTION_BYTES).unwrap() + 1;
        let e = check(&component(&[module(n, body - 16)], Some(HTTP))).unwrap_err();
        assert_eq!(too_large(e).0, "bytes of function code");
    }

    /// A component of one core module written in the text format.
    fn wat_component(module: &str) -> Vec<u8> {
        let m = wat::parse_str(module).unwrap();
        component(&[m], Some(RPC))
    }

    /// Red team, round 2: a few KB of code that compiled for minutes. Each shape is refused
    /// before any compile, naming what is over; just under, it passes.
    #[test]
    fn tiny_bodies_with_costly_shapes_are_refused() {
        let funcs = |n: usize, f: &str| format!("(module {})", f.repeat(n));
        // Locals: 1,000 functions each declaring 50,000 took 6.3 s (built in binary: the
        // text format names each local).
        let locals = |per: u32, n: usize| {
            let mut m = b"\0asm\x01\0\0\0".to_vec();
            section(&mut m, 1, &[1, 0x60, 0, 0]);
            let mut f = Vec::new();
            leb(&mut f, n);
            f.resize(f.len() + n, 0);
            section(&mut m, 3, &f);
            let mut body = vec![1];
            leb(&mut body, per as usize);
            body.extend_from_slice(&[0x7e, 0x0b]);
            let mut code = Vec::new();
            leb(&mut code, n);
            for _ in 0..n {
                leb(&mut code, body.len());
                code.extend_from_slice(&body);
            }
            section(&mut m, 10, &code);
            component(&[m], Some(RPC))
        };
        assert_eq!(
            too_large(check(&locals(50_000, 1)).unwrap_err()),
            ("locals in one function", 50_000, MAX_FUNCTION_LOCALS)
        );
        let per = MAX_FUNCTION_LOCALS as u32;
        let n = (MAX_LOCALS / MAX_FUNCTION_LOCALS) as usize + 1;
        assert_eq!(
            too_large(check(&locals(per, n)).unwrap_err()).0,
            "locals of all functions"
        );
        assert!(check(&locals(per, n - 1)).is_ok());

        // Parameters: 1,000 functions of 1,000 took 54 s.
        let params = |k: usize| format!("(func (param {}))", "i32 ".repeat(k));
        let e = check(&wat_component(&funcs(1, &params(1_000)))).unwrap_err();
        assert_eq!(
            too_large(e),
            (
                "parameters and results in one function",
                1_000,
                MAX_FUNCTION_ARITY
            )
        );
        let k = MAX_FUNCTION_ARITY as usize;
        let n = (MAX_ARITY / MAX_FUNCTION_ARITY) as usize + 1;
        let e = check(&wat_component(&funcs(n, &params(k)))).unwrap_err();
        assert_eq!(too_large(e).0, "parameters and results of all functions");

        // Nesting: 100,000 nested blocks took 31 s.
        let nest = |d: usize| format!("(func {}{})", "(block ".repeat(d), ")".repeat(d));
        let e = check(&wat_component(&funcs(1, &nest(100_000)))).unwrap_err();
        assert_eq!(too_large(e).0, "nested blocks in one function");
        let d = MAX_NESTING as usize - 1; // the function's own frame counts as one
        assert!(check(&wat_component(&funcs(1, &nest(d)))).is_ok());
        let n = (MAX_NESTING_COST / (MAX_NESTING * MAX_NESTING)) as usize + 1;
        let e = check(&wat_component(&funcs(n, &nest(d)))).unwrap_err();
        assert_eq!(too_large(e).0, "nesting cost (sum of squared depths)");

        // Variables x blocks (round 3): 4,096 locals and 100,000 blocks took 33 s and 1.6 GiB;
        // 20,000 `if/else` 88 s and 3.1 GiB.
        let chain = |locals: usize, blocks: usize| {
            format!(
                "(func (local {}) {})",
                "i64 ".repeat(locals),
                "(block) ".repeat(blocks)
            )
        };
        let e = check(&wat_component(&funcs(1, &chain(4_000, 100_000)))).unwrap_err();
        assert_eq!(too_large(e).0, "variables x blocks in one function");
        let diamond = format!(
            "(func (local {}) {})",
            "i64 ".repeat(4_000),
            "(if (i32.const 0) (then) (else)) ".repeat(20_000)
        );
        let e = check(&wat_component(&funcs(1, &diamond))).unwrap_err();
        assert_eq!(too_large(e).0, "variables x blocks in one function");
        // Round 4: one `block` and many `br_if`: each branch makes a block in Cranelift.
        let brif = format!(
            "(func (local {}) (block {}))",
            "i32 ".repeat(4_096),
            "(br_if 0 (local.get 0)) ".repeat(1_000)
        );
        let e = check(&wat_component(&funcs(1, &brif))).unwrap_err();
        assert_eq!(too_large(e).0, "variables x blocks in one function");
        let table = format!(
            "(func (local {}) (block (br_table {} (local.get 0))))",
            "i32 ".repeat(4_096),
            "0 ".repeat(1_000)
        );
        let e = check(&wat_component(&funcs(1, &table))).unwrap_err();
        assert_eq!(too_large(e).0, "variables x blocks in one function");
        // Just under per function, over in total.
        let per = chain(1_000, 999);
        assert!(check(&wat_component(&funcs(1, &per))).is_ok());
        let n = (MAX_SSA_COST / 999_000) as usize + 1;
        let e = check(&wat_component(&funcs(n, &per))).unwrap_err();
        assert_eq!(too_large(e).0, "variables x blocks of all functions");

        // Operand stack: 20,000 values took 57 s.
        let stack = |h: usize| format!("(func {}{})", "i32.const 0 ".repeat(h), "drop ".repeat(h));
        let e = check(&wat_component(&funcs(1, &stack(20_000)))).unwrap_err();
        assert_eq!(too_large(e).0, "values on one function's operand stack");
        let h = MAX_STACK as usize;
        assert!(check(&wat_component(&funcs(1, &stack(h)))).is_ok());
        let n = (MAX_STACK_COST / (MAX_STACK * MAX_STACK)) as usize + 1;
        let e = check(&wat_component(&funcs(n, &stack(h)))).unwrap_err();
        assert_eq!(
            too_large(e).0,
            "operand stack cost (sum of squared heights)"
        );
    }

    #[test]
    fn invalid_code_is_refused_before_compiling() {
        // A body that leaves the wrong type on the stack: the text parser accepts it, the
        // validator does not.
        let m = wat::parse_str("(module (func (result i32) i64.const 1))").unwrap();
        let e = check(&component(&[m], Some(RPC))).unwrap_err();
        assert!(
            matches!(e, LoadError::NotComponent(ref m) if m.contains("does not validate")),
            "{e}"
        );
    }

    #[test]
    fn module_instance_component_and_canonical_limits() {
        let small = Limits {
            functions: 100,
            code_bytes: 10_000,
            function_bytes: 1_000,
            modules: 2,
            components: 1,
            core_instances: 2,
            canonicals: 2,
            ..Limits::HOST
        };
        let modules = component(&[module(1, 3), module(1, 3), module(1, 3)], Some(RPC));
        assert_eq!(
            too_large(walk(&modules, &small).unwrap_err()),
            ("core modules", 3, 2)
        );
        let instances = wat::parse_str(
            r#"(component (core module $m)
                (core instance (instantiate $m)) (core instance (instantiate $m))
                (core instance (instantiate $m)))"#,
        )
        .unwrap();
        assert_eq!(
            too_large(walk(&instances, &small).unwrap_err()),
            ("core instances", 3, 2)
        );
        let components = wat::parse_str("(component (component) (component (component)))").unwrap();
        assert_eq!(
            too_large(walk(&components, &small).unwrap_err()),
            ("nested components", 2, 1)
        );
        let canonicals = wat::parse_str(
            r#"(component
                (import "f" (func $f))
                (core func (canon lower (func $f)))
                (core func (canon lower (func $f)))
                (core func (canon lower (func $f))))"#,
        )
        .unwrap();
        assert_eq!(
            too_large(walk(&canonicals, &small).unwrap_err()),
            ("canonical functions", 3, 2)
        );
    }

    /// Every guest of this repository passes, as the world its manifest says.
    #[test]
    fn the_repository_guests_pass() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut seen = 0;
        for dir in ["examples", "tests/guests"] {
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let dir = entry.unwrap().path();
                let Ok(manifest) = std::fs::read_to_string(dir.join("extension.toml")) else {
                    continue;
                };
                let wasm = std::fs::read(dir.join("extension.wasm")).unwrap_or_else(|e| {
                    panic!("{}: {e} (run scripts/build-examples.sh)", dir.display())
                });
                // An Extism plug-in is a core module: its own check.
                if manifest.contains("kind = \"extism\"") {
                    crate::extism::check::check(&wasm).unwrap();
                    seen += 1;
                    continue;
                }
                // http extensions route endpoints; rpc ones list methods (and may map endpoints
                // to them).
                let want = if !manifest.contains("[[methods]]") {
                    WorldKind::Http
                } else {
                    WorldKind::Rpc
                };
                assert_eq!(check(&wasm).unwrap(), want, "{}", dir.display());
                seen += 1;
            }
        }
        assert!(seen >= 12, "{seen}");
    }
}
