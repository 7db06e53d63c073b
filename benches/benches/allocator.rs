//! One allocation pass (offers generated over all agents and frameworks) at the shapes of
//! Mesos' allocator benchmark: 1,000 x 100, 5,000 x 500 and 10,000 x 1,000.
//!
//! `cargo bench -p agora-benches --bench allocator`

use std::time::Duration;

use agora_benches::core_fixture::{MESOS_SHAPES, loaded_master, run_allocation};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

fn allocation_pass(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocation_pass");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(1));
    for shape in MESOS_SHAPES {
        group.bench_function(format!("{shape}"), |bencher| {
            bencher.iter_batched(
                || loaded_master(shape, 42),
                |mut loaded| {
                    let (made, commands) = run_allocation(&mut loaded);
                    assert_eq!(made, shape.agents, "every agent is offered once");
                    // Returned so that dropping the offers is not timed.
                    (loaded, commands)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, allocation_pass);
criterion_main!(benches);
