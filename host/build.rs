//! Lays out the release `ferry` executable's code so that what a host runs sits together: the
//! kernel maps the executable in 64 KiB blocks, so code scattered over the whole text kept
//! ~10 MiB of it resident at idle and more under load (docs/benchmarks.md, "Code layout").

include!("../layout/link.rs");

fn main() {
    order_code_of("ferry", "../layout");
}
