//! What the machine offers: detected with sysinfo, then overridden by `--resources`.

use std::path::Path;

use agora_proto::{CPUS, DISK, MEM, PORTS, RangeSet, Resources, v1};

/// Default host port range offered to tasks.
pub const DEFAULT_PORTS: (u64, u64) = (31000, 32000);

/// Memory (MiB) kept back for the host: a tenth of it, at least 256 MiB, at most half of it.
pub fn memory_reserve_mib(total_mib: f64) -> f64 {
    (total_mib * 0.1).max(256.0).min(total_mib / 2.0)
}

/// Resources detected on this machine: logical CPUs, memory minus [`memory_reserve_mib`],
/// available disk of the file system holding `work_dir` (when given), and the default ports.
/// Names present in `overrides` are not probed. Blocking: call it off the async runtime.
pub fn detect_resources(work_dir: Option<&Path>, overrides: &Resources) -> Resources {
    let mut detected = Resources::new();
    let overridden = |name: &str| overrides.to_proto().iter().any(|r| r.name == name);
    if !overridden(CPUS) || !overridden(MEM) {
        let fallback_cpus = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        match sysinfo::System::new() {
            Ok(mut system) => {
                system.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
                system.refresh_memory();
                let cpus = match system.cpus().len() {
                    0 => fallback_cpus,
                    count => count as f64,
                };
                let total_mib = system.total_memory() as f64 / (1024.0 * 1024.0);
                let mem = (total_mib - memory_reserve_mib(total_mib)).floor().max(0.0);
                detected = detected.with_scalar(CPUS, cpus).with_scalar(MEM, mem);
            }
            Err(error) => {
                tracing::warn!(%error, "cannot read cpus and memory; pass --resources");
                detected = detected.with_scalar(CPUS, fallback_cpus);
            }
        }
    }
    if let Some(dir) = work_dir
        && !overridden(DISK)
        && let Some(disk_mib) = available_disk_mib(dir)
    {
        detected = detected.with_scalar(DISK, disk_mib);
    }
    detected = detected.with_ranges(
        PORTS,
        RangeSet::from_range(DEFAULT_PORTS.0, DEFAULT_PORTS.1),
    );
    merge_overrides(&detected, overrides)
}

/// `detected` with every resource named in `overrides` replaced by the override.
pub fn merge_overrides(detected: &Resources, overrides: &Resources) -> Resources {
    let override_list = overrides.to_proto();
    let mut merged: Vec<v1::Resource> = detected
        .to_proto()
        .into_iter()
        .filter(|resource| !override_list.iter().any(|o| o.name == resource.name))
        .collect();
    merged.extend(override_list);
    // Both inputs are valid resources and names are disjoint, so this cannot fail.
    Resources::from_proto(&merged).unwrap_or_else(|_| detected.clone())
}

fn available_disk_mib(dir: &Path) -> Option<f64> {
    let dir = std::fs::canonicalize(dir).ok()?;
    let disks = sysinfo::Disks::new_with_refreshed_list().ok()?;
    disks
        .iter()
        .filter(|disk| dir.starts_with(disk.mount_point()))
        .max_by_key(|disk| disk.mount_point().as_os_str().len())
        .map(|disk| (disk.available_space() / (1024 * 1024)) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_is_bounded() {
        assert_eq!(memory_reserve_mib(16384.0), 1638.4);
        assert_eq!(memory_reserve_mib(1024.0), 256.0);
        assert_eq!(memory_reserve_mib(256.0), 128.0);
    }

    #[test]
    fn detection_finds_cpus_memory_disk_and_default_ports() {
        let dir = tempfile::tempdir().unwrap();
        let detected = detect_resources(Some(dir.path()), &Resources::new());
        assert!(detected.cpus() >= 1.0);
        assert!(detected.mem() > 0.0);
        assert!(detected.disk() > 0.0);
        assert_eq!(detected.ports(), RangeSet::from_range(31000, 32000));
    }

    #[test]
    fn overrides_replace_detected_values_by_name() {
        let overrides = Resources::parse("cpus:2.5;ports:[40000-40010];gpus:1").unwrap();
        let detected = detect_resources(None, &overrides);
        assert_eq!(detected.cpus(), 2.5);
        assert_eq!(detected.ports(), RangeSet::from_range(40000, 40010));
        assert_eq!(detected.scalar("gpus"), 1.0);
        assert!(detected.mem() > 0.0, "mem is still detected");
        assert_eq!(detected.disk(), 0.0, "no work dir: no disk");
    }
}
