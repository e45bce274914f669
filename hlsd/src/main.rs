//! hlsd daemon.

fn main() {
    println!("hlsd: not yet built");
}
