//! Test component: exports only `ferry-test:greeter/greet`, which other components call through
//! the lattice.

mod bindings {
    wit_bindgen::generate!({ path: "wit", world: "greeter" });
}

use bindings::exports::ferry_test::greeter::greet::{Guest, Mood, Perms, Person, Shape};

struct Component;

bindings::export!(Component with_types_in bindings);

impl Guest for Component {
    fn hello(name: String) -> String {
        format!("hello, {name}")
    }

    fn describe(p: Person, s: Shape, m: Mood) -> Result<String, String> {
        if p.age == 0 {
            return Err(format!("{} is too young", p.name));
        }
        let shape = match s {
            Shape::Circle(r) => format!("circle {r}"),
            Shape::Square(side) => format!("square {side}"),
            Shape::Point => "point".to_owned(),
        };
        let mood = match m {
            Mood::Happy => "happy",
            Mood::Sad => "sad",
        };
        Ok(format!("{} ({}) {shape} {mood} [{}]", p.name, p.age, p.tags.join(",")))
    }

    fn sum(values: Vec<i64>) -> i64 {
        values.iter().sum()
    }

    fn reverse_bytes(mut data: Vec<u8>) -> Vec<u8> {
        data.reverse();
        data
    }

    fn pass_through(o: Option<Option<u32>>, f: Perms, c: char) -> (Option<Option<u32>>, Perms, char) {
        (o, f, c)
    }

    fn slow(ms: u32) -> u32 {
        wasi::clocks::monotonic_clock::subscribe_duration(u64::from(ms) * 1_000_000).block();
        ms
    }
}
