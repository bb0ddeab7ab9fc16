#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The engine's safety settings (issue 9, finding 9), shown by behaviour on the engine a
//! `Runtime` really uses: out-of-bounds memory accesses trap (never read or write outside the
//! memory), a runaway recursion traps with a stack overflow, and runtimes of equal settings
//! share one engine.

use warden_runtime::{Runtime, RuntimeConfig};
use wasmtime::{Engine, Instance, Module, Store, Trap};

const GUEST: &str = r#"
(module
  (memory (export "memory") 1 1)
  (func (export "load") (param i32) (result i32)
    local.get 0
    i32.load)
  ;; A static offset past the 4 GiB reservation and its guard: needs a real bounds check.
  (func (export "load_far") (param i32) (result i32)
    local.get 0
    i32.load offset=0xfffffff0)
  (func (export "store") (param i32 i32)
    local.get 0
    local.get 1
    i32.store)
  (func $recurse (export "recurse") (param i32) (result i32)
    local.get 0
    i32.const 1
    i32.add
    call $recurse))
"#;

fn instance(engine: &Engine) -> (Store<()>, Instance) {
    let module = Module::new(engine, wat::parse_str(GUEST).unwrap()).unwrap();
    let mut store = Store::new(engine, ());
    store.set_fuel(u64::MAX / 2).unwrap();
    store.set_epoch_deadline(1_000_000);
    let instance = Instance::new(&mut store, &module, &[]).unwrap();
    (store, instance)
}

fn trap(e: &wasmtime::Error) -> Option<Trap> {
    e.downcast_ref::<Trap>().copied()
}

#[test]
fn out_of_bounds_accesses_trap() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let (mut store, instance) = instance(rt.engine());
    let load = instance
        .get_typed_func::<u32, u32>(&mut store, "load")
        .unwrap();
    let load_far = instance
        .get_typed_func::<u32, u32>(&mut store, "load_far")
        .unwrap();
    let store_fn = instance
        .get_typed_func::<(u32, u32), ()>(&mut store, "store")
        .unwrap();
    // The last whole word of the one page is readable and writable.
    store_fn.call(&mut store, (65532, 7)).unwrap();
    assert_eq!(load.call(&mut store, 65532).unwrap(), 7);
    // One byte past the end, a page past, in the guard region and at the top of the index
    // space: each traps.
    for addr in [65533, 65536, 65536 + 4096, 32 << 20, 0xffff_fff0] {
        let e = load.call(&mut store, addr).unwrap_err();
        assert_eq!(
            trap(&e),
            Some(Trap::MemoryOutOfBounds),
            "load {addr:#x}: {e:?}"
        );
        let e = store_fn.call(&mut store, (addr, 0xdead)).unwrap_err();
        assert_eq!(
            trap(&e),
            Some(Trap::MemoryOutOfBounds),
            "store {addr:#x}: {e:?}"
        );
    }
    let e = load_far.call(&mut store, 0x10).unwrap_err();
    assert_eq!(trap(&e), Some(Trap::MemoryOutOfBounds), "{e:?}");
    // The failed stores wrote nothing inside the memory either.
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    assert_eq!(memory.data_size(&store), 65536);
    assert_eq!(&memory.data(&store)[65532..], &7u32.to_le_bytes());
}

#[test]
fn a_runaway_recursion_traps_with_a_stack_overflow() {
    let rt = Runtime::new(RuntimeConfig::default()).unwrap();
    let (mut store, instance) = instance(rt.engine());
    let recurse = instance
        .get_typed_func::<u32, u32>(&mut store, "recurse")
        .unwrap();
    let e = recurse.call(&mut store, 0).unwrap_err();
    assert_eq!(trap(&e), Some(Trap::StackOverflow), "{e:?}");
    // The engine is still usable after the trap.
    let load = instance
        .get_typed_func::<u32, u32>(&mut store, "load")
        .unwrap();
    assert_eq!(load.call(&mut store, 0).unwrap(), 0);
}

#[test]
fn runtimes_of_equal_settings_share_one_engine() {
    let a = Runtime::new(RuntimeConfig::default()).unwrap();
    let b = Runtime::new(RuntimeConfig::default()).unwrap();
    assert!(Engine::same(a.engine(), b.engine()));
    let c = Runtime::new(RuntimeConfig {
        max_memory: 32 << 20,
        ..RuntimeConfig::default()
    })
    .unwrap();
    assert!(!Engine::same(a.engine(), c.engine()));
}
