//! The eBPF toolchain: rust-src for `-Z build-std=core`, and bpf-linker linked against the
//! LLVM that ships inside this Rust toolchain (so rustc and the linker agree on the LLVM
//! bitcode version, and no system LLVM is needed).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};

/// bpf-linker release known to work with the pinned aya crates and Rust's LLVM 22.
const BPF_LINKER_VERSION: &str = "0.13.0";

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rustc() -> Command {
    Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
}

/// Makes sure everything is in place; returns the directory holding `bpf-linker`.
pub fn ensure() -> Result<PathBuf> {
    ensure_rust_src()?;
    ensure_bpf_linker()
}

fn ensure_rust_src() -> Result<()> {
    let sysroot = PathBuf::from(output(rustc().args(["--print", "sysroot"]))?);
    if sysroot.join("lib/rustlib/src/rust/library/core").is_dir() {
        return Ok(());
    }
    eprintln!("xtask: installing the rust-src component (needed to build `core` for eBPF)");
    let status = Command::new("rustup")
        .args(["component", "add", "rust-src"])
        .status()
        .context("cannot run rustup: install the rust-src component of this toolchain by hand")?;
    if !status.success() {
        bail!("`rustup component add rust-src` failed");
    }
    Ok(())
}

/// Where the toolchain-specific tools live: `$AGENT_SENSOR_TOOLS_DIR`, else
/// `$XDG_CACHE_HOME/agent-sensor/tools`, else `~/.cache/agent-sensor/tools`.
pub(crate) fn tools_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("AGENT_SENSOR_TOOLS_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    cache.join("agent-sensor/tools")
}

/// The toolchain's own libLLVM, e.g. `libLLVM.so.22.1-rust-1.95.0-stable`.
fn rust_llvm(sysroot: &Path) -> Result<(PathBuf, String)> {
    let lib = sysroot.join("lib");
    let entries =
        std::fs::read_dir(&lib).with_context(|| format!("cannot list {}", lib.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("libLLVM.so.") {
            if name.contains("-rust-") {
                let major = rest.split('.').next().unwrap_or_default().to_string();
                return Ok((entry.path(), major));
            }
        }
    }
    bail!(
        "this Rust toolchain ships no libLLVM.so.*-rust-* in {}; bpf-linker cannot be built \
         against it (use a rustup-managed toolchain)",
        lib.display()
    )
}

fn ensure_bpf_linker() -> Result<PathBuf> {
    let sysroot = PathBuf::from(output(rustc().args(["--print", "sysroot"]))?);
    let (llvm_lib, llvm_major) = rust_llvm(&sysroot)?;
    let llvm_name = llvm_lib
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // One cache entry per linker version and toolchain LLVM: a toolchain update builds anew.
    let root = tools_root().join(format!(
        "bpf-linker-{BPF_LINKER_VERSION}-{}",
        llvm_name.trim_start_matches("libLLVM.so.")
    ));
    let bin = root.join("bin");
    if bin.join("bpf-linker").is_file() {
        return Ok(bin);
    }
    eprintln!(
        "xtask: building bpf-linker {BPF_LINKER_VERSION} against the toolchain's LLVM {llvm_major} \
         (first run only, about a minute) into {}",
        root.display()
    );
    // bpf-linker's build wants an LLVM prefix with lib/libLLVM.so.
    let prefix = root.join("llvm");
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("cannot create {}", prefix_lib.display()))?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(&llvm_name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm_lib, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
    }
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--version",
            BPF_LINKER_VERSION,
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .arg("--root")
        .arg(&root)
        .env("LLVM_PREFIX", &prefix)
        .status()
        .context("cannot run cargo install")?;
    if !status.success() || !bin.join("bpf-linker").is_file() {
        bail!("building bpf-linker failed (see cargo's output above)");
    }
    Ok(bin)
}
