//! Lays out the release `ferry` executable's code so that what an idle host runs sits together:
//! the kernel maps the executable in 64 KiB blocks, so start-up code scattered over the whole
//! text kept ~10 MiB of it resident (docs/benchmarks.md, "Code layout"). `layout/ferry.order`
//! lists those functions; `scripts/layout.sh` writes it again from a release build.

fn main() {
    println!("cargo:rerun-if-changed=layout/ferry.order");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    // lld's option: Rust links x86_64 Linux GNU targets with lld; release builds only.
    let lld = var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if lld && var("PROFILE") == "release" {
        let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("layout/ferry.order");
        println!("cargo:rustc-link-arg-bin=ferry=-Wl,--symbol-ordering-file={}", order.display());
        // Functions renamed or gone since the list was written are skipped.
        println!("cargo:rustc-link-arg-bin=ferry=-Wl,--no-warn-symbol-ordering");
    }
}
