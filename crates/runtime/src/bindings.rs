//! Host bindings for the `rpc-extension` world (wit/warden.wit).

wasmtime::component::bindgen!({
    path: "../../wit/warden.wit",
    world: "rpc-extension",
    imports: { default: async | trappable },
    exports: { default: async },
});

pub use warden::extension::types::CallError as GuestCallError;
