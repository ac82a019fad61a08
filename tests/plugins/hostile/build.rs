//! `table_bomb` needs a `table.grow` instruction, which stable Rust cannot emit
//! for wasm32 (there is no intrinsic, and `asm!` on wasm is behind the
//! `asm_experimental_arch` feature). When the compiler accepts unstable features
//! (a nightly, or `RUSTC_BOOTSTRAP=1` as in `scripts/build-plugins`' Debian recipe)
//! we enable the assembly and make the function table growable; otherwise the
//! tool reports that it is unavailable.
fn main() {
    println!("cargo:rustc-check-cfg=cfg(table_asm)");
    println!("cargo:rerun-if-env-changed=RUSTC_BOOTSTRAP");
    let target = std::env::var("TARGET").unwrap_or_default();
    let bootstrap = std::env::var("RUSTC_BOOTSTRAP").is_ok_and(|v| v == "1");
    let nightly =
        std::process::Command::new(std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()))
            .arg("--version")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"));
    if target.starts_with("wasm32") && (bootstrap || nightly) {
        println!("cargo:rustc-cfg=table_asm");
        // Without this wasm-ld gives the function table a maximum equal to its
        // initial size, and `table.grow` fails without ever asking the host.
        println!("cargo:rustc-link-arg=--growable-table");
    }
}
