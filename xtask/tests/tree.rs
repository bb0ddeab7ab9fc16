//! The real workspace keeps every invariant (`cargo run -p xtask -- check` does the same).

#[test]
fn the_workspace_keeps_its_architectural_invariants() {
    let meta = xtask::cargo_metadata().expect("cargo metadata");
    let violations = xtask::check(&meta).expect("reading the workspace");
    assert!(
        violations.is_empty(),
        "{} architectural violation(s) (see xtask/src/rules.rs):\n  {}\n",
        violations.len(),
        violations.join("\n  ")
    );
}
