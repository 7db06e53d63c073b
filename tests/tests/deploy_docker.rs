//! `deploy/docker/`: what can be checked without building an image. The offline script
//! (`build-image.sh --context-only`) assembles a FROM scratch context from this build's binaries
//! with their shared libraries and busybox, notes the binaries that are not built, and refuses
//! to run without master and agent; the multi-stage Dockerfile (which needs a registry, so it is
//! never built here) names only packages and bins that exist. `deploy_compose.rs` builds and
//! runs the image.

mod newcomer_support;

use std::path::Path;
use std::process::{Command, Output};

use agora_tests::docker_image::{BUSYBOX_PATH, docker_required};
use anyhow::Context;
use newcomer_support::{
    CLUSTER_PACKAGES, build_binaries, repo_root, workspace_bins, workspace_packages,
};

fn build_image_script(arguments: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
    Command::new("bash")
        .arg(repo_root().join("deploy/docker/build-image.sh"))
        .args(arguments)
        .output()
        .context("running build-image.sh")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn context_holds_the_binaries_their_libraries_and_busybox() -> anyhow::Result<()> {
    if !Path::new(BUSYBOX_PATH).exists() {
        let message = format!("{BUSYBOX_PATH} is missing (apt-get install busybox-static)");
        anyhow::ensure!(!docker_required(), "{message}");
        println!("skipping context_holds_the_binaries_their_libraries_and_busybox: {message}");
        return Ok(());
    }
    let bin_dir = build_binaries(CLUSTER_PACKAGES)?;
    // Only master, agent and everywhere, copied to a directory of their own: the frameworks'
    // bins are "not built" here whatever else the target dir holds.
    let scratch = tempfile::tempdir()?;
    let bins = scratch.path().join("bin");
    std::fs::create_dir(&bins)?;
    for binary in ["master", "agent", "everywhere"] {
        std::fs::copy(bin_dir.join(binary), bins.join(binary))
            .with_context(|| format!("copying {binary}"))?;
    }
    let context = scratch.path().join("context");
    let output = build_image_script(&[
        "--bin-dir".as_ref(),
        bins.as_os_str(),
        "--context-only".as_ref(),
        context.as_os_str(),
    ])?;
    let log = text(&output);
    anyhow::ensure!(output.status.success(), "build-image.sh failed: {log}");
    for missing in ["svcframework", "batchframework"] {
        anyhow::ensure!(
            log.contains(&format!("note: {}", bins.join(missing).display())),
            "no note about the missing {missing}: {log}"
        );
    }

    let rootfs = context.join("rootfs");
    for binary in ["master", "agent", "everywhere"] {
        let path = rootfs.join("usr/local/bin").join(binary);
        anyhow::ensure!(path.is_file(), "{} missing", path.display());
    }
    anyhow::ensure!(rootfs.join("bin/busybox").is_file(), "busybox missing");
    let sh = std::fs::read_link(rootfs.join("bin/sh")).context("bin/sh is not a symlink")?;
    anyhow::ensure!(sh == Path::new("busybox"), "bin/sh -> {}", sh.display());
    // Every library the loader will look for is in the rootfs under the same path.
    let ldd = Command::new("ldd").arg(bins.join("agent")).output()?;
    let libraries: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|word| word.starts_with('/'))
        .map(str::to_owned)
        .collect();
    anyhow::ensure!(!libraries.is_empty(), "ldd found no libraries for agent");
    for library in &libraries {
        let inside = rootfs.join(library.trim_start_matches('/'));
        anyhow::ensure!(inside.is_file(), "{library} is not in the image");
    }
    for directory in ["tmp", "var/lib/agora/master", "var/lib/agora/agent"] {
        anyhow::ensure!(rootfs.join(directory).is_dir(), "{directory} missing");
    }
    let dockerfile = std::fs::read_to_string(context.join("Dockerfile"))?;
    anyhow::ensure!(
        dockerfile.contains("FROM scratch") && !dockerfile.contains("RUN "),
        "the offline Dockerfile must need no base image and run nothing: {dockerfile}"
    );
    Ok(())
}

#[test]
fn script_refuses_to_build_without_master_and_agent() -> anyhow::Result<()> {
    let empty = tempfile::tempdir()?;
    let context = empty.path().join("context");
    let output = build_image_script(&[
        "--bin-dir".as_ref(),
        empty.path().as_os_str(),
        "--context-only".as_ref(),
        context.as_os_str(),
    ])?;
    let log = text(&output);
    anyhow::ensure!(!output.status.success(), "it succeeded: {log}");
    anyhow::ensure!(
        log.contains("master is missing") && log.contains("cargo build --release"),
        "the error should name the binary and the fix: {log}"
    );
    anyhow::ensure!(!context.exists(), "a context was assembled anyway");
    Ok(())
}

#[test]
fn multi_stage_dockerfile_names_real_packages_and_bins() -> anyhow::Result<()> {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("deploy/docker/Dockerfile"))?;
    let packages = workspace_packages(&root)?;
    let bins = workspace_bins(&root)?;
    let words: Vec<&str> = dockerfile.split_whitespace().collect();
    // The packages of the `cargo build` command, up to the `&&` that ends it.
    let cargo_build = words
        .windows(2)
        .position(|pair| pair == ["cargo", "build"])
        .context("no cargo build in the Dockerfile")?;
    let named_packages: Vec<&str> = words[cargo_build..]
        .iter()
        .take_while(|word| **word != "&&")
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|pair| *pair[0] == "-p")
        .map(|pair| *pair[1])
        .collect();
    let copied_bins: Vec<&str> = words
        .iter()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .collect();
    anyhow::ensure!(named_packages.len() == 5, "{named_packages:?}");
    for package in &named_packages {
        anyhow::ensure!(
            packages.contains(*package),
            "no package {package}: {packages:?}"
        );
    }
    anyhow::ensure!(copied_bins.len() == 5, "{copied_bins:?}");
    for bin in &copied_bins {
        anyhow::ensure!(bins.contains(*bin), "no bin {bin}: {bins:?}");
    }
    let stages = dockerfile
        .lines()
        .filter(|line| line.starts_with("FROM "))
        .count();
    anyhow::ensure!(stages == 2, "a builder and a runtime stage expected");
    Ok(())
}
