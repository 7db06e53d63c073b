//! The test image for Docker tests: `agora-test-busybox:<hash>`, built locally FROM scratch
//! with Debian's static busybox (no registry is ever contacted), and the rule for tests that
//! need a Docker Engine (`AGORA_REQUIRE_DOCKER=1`: fail when none answers; otherwise skip).

use std::path::Path;

use anyhow::Context;
use bollard::Docker;
use bollard::query_parameters::BuildImageOptions;
use futures::StreamExt;

/// Where Debian's `busybox-static` installs its binary.
pub const BUSYBOX_PATH: &str = "/bin/busybox";

/// Image repository of the test image; the tag is a hash of its content.
pub const TEST_IMAGE_REPOSITORY: &str = "agora-test-busybox";

/// Busybox applets linked into `/bin` of the image.
const APPLETS: &[&str] = &[
    "sh", "ash", "httpd", "sleep", "echo", "cat", "true", "false", "kill", "wget", "nc", "env",
    "ls", "ps", "mkdir", "rm", "touch", "test", "[", "printf", "date", "id", "hostname",
];

const DOCKERFILE: &str = "FROM scratch\nCOPY bin/ /bin/\nCOPY www/ /www/\nCMD [\"/bin/sh\"]\n";

const INDEX_HTML: &str = "hello from agora\n";

/// True when `AGORA_REQUIRE_DOCKER=1`: Docker tests must fail, not skip, without an engine.
pub fn docker_required() -> bool {
    std::env::var("AGORA_REQUIRE_DOCKER").is_ok_and(|value| value == "1")
}

/// A Docker connection for a test, or `None` (after printing why) when no engine answers or
/// busybox-static is missing and `AGORA_REQUIRE_DOCKER` is not `1`.
///
/// # Panics
/// When Docker or busybox is unavailable and `AGORA_REQUIRE_DOCKER=1`: the test must fail.
pub async fn docker_or_skip(test: &str) -> Option<Docker> {
    let unavailable = match agora_agent::connect_docker(None).await {
        Ok(docker) if Path::new(BUSYBOX_PATH).exists() => return Some(docker),
        Ok(_) => format!("{BUSYBOX_PATH} is missing (apt-get install busybox-static)"),
        Err(error) => error.to_string(),
    };
    if docker_required() {
        panic!(
            "{test}: Docker is required (AGORA_REQUIRE_DOCKER=1) but unavailable: {unavailable}"
        );
    }
    println!("skipping {test}: Docker unavailable: {unavailable}");
    None
}

/// Builds the test image unless it is present; returns its reference `agora-test-busybox:<hash>`.
pub async fn ensure_test_image(docker: &Docker) -> anyhow::Result<String> {
    let busybox = std::fs::read(BUSYBOX_PATH)
        .with_context(|| format!("reading {BUSYBOX_PATH} (apt-get install busybox-static)"))?;
    let mut hasher = Fnv64::new();
    hasher.write(&busybox);
    hasher.write(DOCKERFILE.as_bytes());
    hasher.write(APPLETS.join(",").as_bytes());
    hasher.write(INDEX_HTML.as_bytes());
    let image = format!("{TEST_IMAGE_REPOSITORY}:{:016x}", hasher.finish());
    if docker.inspect_image(&image).await.is_ok() {
        return Ok(image);
    }
    let context = build_context(&busybox);
    let options = BuildImageOptions {
        t: Some(image.clone()),
        dockerfile: "Dockerfile".to_owned(),
        rm: true,
        forcerm: true,
        ..Default::default()
    };
    let mut build = docker.build_image(
        options,
        None,
        Some(bollard::body_full(bytes::Bytes::from(context))),
    );
    while let Some(step) = build.next().await {
        let info = step.with_context(|| format!("building {image}"))?;
        if let Some(error) = info.error_detail.and_then(|detail| detail.message) {
            anyhow::bail!("building {image}: {error}");
        }
    }
    docker
        .inspect_image(&image)
        .await
        .with_context(|| format!("{image} missing after the build"))?;
    Ok(image)
}

/// The build context tar: Dockerfile, `bin/busybox`, one symlink per applet, `www/index.html`.
fn build_context(busybox: &[u8]) -> Vec<u8> {
    let mut tar = Vec::new();
    append_file(&mut tar, "Dockerfile", DOCKERFILE.as_bytes(), 0o644);
    append_directory(&mut tar, "bin/");
    append_file(&mut tar, "bin/busybox", busybox, 0o755);
    for applet in APPLETS {
        append_symlink(&mut tar, &format!("bin/{applet}"), "busybox");
    }
    append_directory(&mut tar, "www/");
    append_file(&mut tar, "www/index.html", INDEX_HTML.as_bytes(), 0o644);
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

fn append_file(tar: &mut Vec<u8>, name: &str, content: &[u8], mode: u32) {
    tar.extend_from_slice(&header(name, mode, content.len() as u64, b'0', ""));
    tar.extend_from_slice(content);
    let padding = (512 - content.len() % 512) % 512;
    tar.extend(std::iter::repeat_n(0u8, padding));
}

fn append_directory(tar: &mut Vec<u8>, name: &str) {
    tar.extend_from_slice(&header(name, 0o755, 0, b'5', ""));
}

fn append_symlink(tar: &mut Vec<u8>, name: &str, target: &str) {
    tar.extend_from_slice(&header(name, 0o777, 0, b'2', target));
}

/// A ustar header block.
fn header(name: &str, mode: u32, size: u64, kind: u8, link: &str) -> [u8; 512] {
    let mut block = [0u8; 512];
    let put = |block: &mut [u8; 512], offset: usize, bytes: &[u8]| {
        block[offset..offset + bytes.len()].copy_from_slice(bytes);
    };
    put(&mut block, 0, name.as_bytes());
    put(&mut block, 100, format!("{mode:07o}\0").as_bytes());
    put(&mut block, 108, b"0000000\0");
    put(&mut block, 116, b"0000000\0");
    put(&mut block, 124, format!("{size:011o}\0").as_bytes());
    put(&mut block, 136, b"00000000000\0");
    put(&mut block, 148, b"        ");
    block[156] = kind;
    put(&mut block, 157, link.as_bytes());
    put(&mut block, 257, b"ustar\0");
    put(&mut block, 263, b"00");
    let checksum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    put(&mut block, 148, format!("{checksum:06o}\0 ").as_bytes());
    block
}

/// FNV-1a, so the image tag is stable across toolchains.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= u64::from(byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
