//! Bundles the scorer plugins into the engine: every `plugins/*.toml` rule file, and
//! every scorer crate under `plugins/` built for wasm32. The engine loads these at
//! start; files in its plugins directory override them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let plugins = manifest.join("../plugins");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed={}", plugins.display());
    println!("cargo:rerun-if-env-changed=OONI_SKIP_WASM_BUILD");
    // sqlx::migrate! embeds the migrations; a new file must rebuild the engine.
    println!(
        "cargo:rerun-if-changed={}",
        manifest.join("../migrations").display()
    );

    let mut entries = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&plugins)
        .expect("plugins/ directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "toml"))
    {
        let name = f.file_name().and_then(|n| n.to_str()).expect("file name");
        entries.push(format!(
            "    (\"{name}\", include_bytes!({:?})),",
            f.canonicalize().expect("path")
        ));
    }

    let crates: Vec<(String, PathBuf)> = files
        .iter()
        .filter(|d| d.join("Cargo.toml").is_file() && !d.ends_with("sdk"))
        .map(|d| {
            let manifest = std::fs::read_to_string(d.join("Cargo.toml")).expect("Cargo.toml");
            let name = manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = \""))
                .and_then(|l| l.strip_suffix('"'))
                .unwrap_or_else(|| panic!("no package name in {}", d.display()))
                .to_owned();
            (name, d.clone())
        })
        .collect();

    if std::env::var_os("OONI_SKIP_WASM_BUILD").is_none() && !crates.is_empty() {
        // One wasm target directory for every profile of the engine: <target>/plugins-wasm.
        let target_dir = out
            .ancestors()
            .nth(4)
            .map_or_else(|| out.join("wasm"), |t| t.join("plugins-wasm"));
        build_wasm(&crates, &target_dir);
        for (name, _) in &crates {
            let file = format!("{}.wasm", name.replace('-', "_"));
            let path = target_dir.join("wasm32-unknown-unknown/wasm").join(&file);
            entries.push(format!("    (\"{file}\", include_bytes!({path:?})),"));
        }
    }
    let code = format!(
        "/// Plugins built into the engine: (file name, contents).\npub const BUNDLED: &[(&str, &[u8])] = &[\n{}\n];\n",
        entries.join("\n")
    );
    std::fs::write(out.join("bundled_plugins.rs"), code).expect("write bundled_plugins.rs");
}

/// Installs the wasm32 standard library with rustup when it is missing, so that the
/// README's one command builds everything on a fresh machine.
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let installed = sysroot.is_some_and(|s| {
        Path::new(&s)
            .join("lib/rustlib/wasm32-unknown-unknown")
            .is_dir()
    });
    if installed {
        return;
    }
    println!("cargo:warning=installing the wasm32-unknown-unknown target with rustup");
    let ok = Command::new("rustup")
        .args(["target", "add", "wasm32-unknown-unknown"])
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        panic!("the wasm32-unknown-unknown target is missing and rustup could not add it: run `rustup target add wasm32-unknown-unknown`");
    }
}

fn build_wasm(crates: &[(String, PathBuf)], target_dir: &Path) {
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
        "--target-dir",
    ])
    .arg(target_dir)
    .current_dir(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"));
    for (name, _) in crates {
        cmd.args(["-p", name]);
    }
    // Flags meant for the host build must not leak into the wasm build.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    // Build-script stdout is read by cargo as directives; send cargo's chatter to stderr.
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd
        .status()
        .expect("running cargo to build the wasm scorer plugins");
    if !status.success() {
        panic!(
            "building the scorer plugins for wasm32 failed ({status}). Is the target installed? \
             Run: rustup target add wasm32-unknown-unknown"
        );
    }
}
