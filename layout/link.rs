// Shared by the build scripts of the binaries whose code is laid out (`include!`d, not a crate):
// hands lld the binary's symbol-ordering file from this directory (docs/benchmarks.md, "Code
// layout"; `scripts/layout.sh` writes the files). Release builds on x86_64 Linux GNU only, where
// Rust links with lld. The files name functions demangled, without crate hashes, and
// `layout/cc` (the linker command there) turns them into the objects' symbol names, so a
// dependency or compiler change does not make them stale; functions renamed or gone since a
// file was written are skipped.

/// Order the code of binary `bin` by `{layout}/{bin}.order` (`layout`: this directory, relative
/// to the package), in release builds linked by lld.
fn order_code_of(bin: &str, layout: &str) {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(layout).join(format!("{bin}.order"));
    // Also while it is missing: the build runs again once it is written.
    println!("cargo:rerun-if-changed={}", order.display());
    if !order.exists() {
        return;
    }
    let lld = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if lld && var("PROFILE") == "release" {
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,--symbol-ordering-file={}", order.display());
        println!("cargo:rustc-link-arg-bin={bin}=-Wl,--no-warn-symbol-ordering");
    }
}
