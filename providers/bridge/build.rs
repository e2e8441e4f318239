//! Lays out the release bridge's code so that what it runs per forwarded call sits together
//! (docs/benchmarks.md, "Code layout"): fewer cold instruction-cache and TLB misses on a path
//! that runs, at one call in flight, after every idle wait.

include!("../../layout/link.rs");

fn main() {
    order_code_of("ferry-provider-bridge", "../../layout");
}
