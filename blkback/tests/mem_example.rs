//! The custom-storage example runs and serves real I/O.
#[path = "../examples/mem_backend.rs"]
#[allow(dead_code)]
mod example;

#[test]
fn the_memory_backend_example_serves_a_frontend() {
    example::demo().unwrap();
}
