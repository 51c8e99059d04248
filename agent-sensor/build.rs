//! Builds the eBPF object (crate `agent-sensor-ebpf`) with aya-build and leaves it in OUT_DIR,
//! where `src/loader` embeds it with `include_bytes_aligned!`.
//!
//! `cargo xtask build|run|test` prepares the toolchain (rust-src, bpf-linker built against the
//! Rust toolchain's own LLVM) and passes its location in `AGENT_SENSOR_TOOLS_BIN`. With
//! `AYA_BUILD_SKIP=1` empty stub objects are written instead, so `cargo check` and clippy need
//! no eBPF toolchain; such a binary refuses to load and says why.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

const OBJECTS: [&str; 2] = ["agent-sensor", "agent-sensor-probe"];

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo:rerun-if-env-changed=AGENT_SENSOR_TOOLS_BIN");
    println!("cargo:rerun-if-changed=../agent-sensor-common/src");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);

    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        for name in OBJECTS {
            fs::write(out_dir.join(name), b"")
                .with_context(|| format!("writing stub eBPF object {name}"))?;
        }
        return Ok(());
    }

    if let Some(tools) = env::var_os("AGENT_SENSOR_TOOLS_BIN") {
        let mut paths = vec![PathBuf::from(tools)];
        paths.extend(env::split_paths(&env::var_os("PATH").unwrap_or_default()));
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { env::set_var("PATH", env::join_paths(paths)?) };
    }
    let on_path = env::split_paths(&env::var_os("PATH").unwrap_or_default())
        .any(|dir| dir.join("bpf-linker").is_file());
    if !on_path {
        return Err(anyhow!(
            "bpf-linker was not found. Build through `cargo xtask build` (it installs bpf-linker \
             once, against this Rust toolchain's LLVM), or set AYA_BUILD_SKIP=1 for a check-only \
             build without eBPF programs"
        ));
    }
    // The pinned aya crates build on stable with `-Z build-std=core`, which needs this.
    // SAFETY: as above.
    unsafe { env::set_var("RUSTC_BOOTSTRAP", "1") };
    let toolchain = env::var("RUSTUP_TOOLCHAIN").unwrap_or_else(|_| "stable".to_string());
    let root_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("no manifest dir")?)
        .join("../agent-sensor-ebpf");
    let root_dir = root_dir
        .canonicalize()
        .context("agent-sensor-ebpf crate not found")?;
    let root_dir = root_dir
        .to_str()
        .context("non-UTF-8 path to agent-sensor-ebpf")?;
    // The eBPF crate is its own workspace (it targets bpfel-unknown-none only); aya-build runs
    // `cargo build --package agent-sensor-ebpf` in the current directory, so build from there.
    env::set_current_dir(root_dir).context("cannot enter the agent-sensor-ebpf crate")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-sensor-ebpf",
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&toolchain),
    )
}
