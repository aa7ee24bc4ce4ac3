//! Sets `cfg(copas_hooks)` where interposing libc works: Linux, glibc, dynamically
//! linked, x86-64 or AArch64 (where the variadic `fcntl`/`ioctl` take their third
//! argument like a fixed one).
fn main() {
    println!("cargo::rustc-check-cfg=cfg(copas_hooks)");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    let features = var("CARGO_CFG_TARGET_FEATURE");
    let supported = var("CARGO_CFG_TARGET_OS") == "linux"
        && var("CARGO_CFG_TARGET_ENV") == "gnu"
        && !features.split(',').any(|f| f == "crt-static")
        && matches!(var("CARGO_CFG_TARGET_ARCH").as_str(), "x86_64" | "aarch64");
    if supported {
        println!("cargo::rustc-cfg=copas_hooks");
    }
}
