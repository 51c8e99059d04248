fn main() {
    // The eBPF binaries name their target architecture through `bpf_target_arch`.
    println!(
        "cargo::rustc-check-cfg=cfg(bpf_target_arch, values(\"x86_64\", \"aarch64\", \"riscv64\"))"
    );
}
