//! The allocator bench with mimalloc as the process allocator, to show how much of an
//! allocation pass is glibc malloc at work (the pass makes ~30 small allocations per offer).
//!
//! `cargo bench -p agora-benches --bench allocator_mimalloc`

use std::time::Duration;

use agora_benches::core_fixture::{MESOS_SHAPES, loaded_master, run_allocation};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn allocation_pass_mimalloc(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocation_pass_mimalloc");
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
                    (loaded, commands)
                },
                BatchSize::PerIteration,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, allocation_pass_mimalloc);
criterion_main!(benches);
