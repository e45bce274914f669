//! ingestd daemon.

fn main() {
    println!("ingestd: not yet built");
}
