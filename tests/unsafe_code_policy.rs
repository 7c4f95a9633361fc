//! Issue 11 item 9: `unsafe` is denied in every crate and allowed only on the reviewed FFI
//! modules (`docs/security.md`, "Memory safety"). The compiler enforces the lint where it is
//! declared; this test keeps it declared: a new crate (or fuzz target) without the crate-root
//! attribute or without the workspace lints, or a new `#[allow(unsafe_code)]`, fails here.

use std::path::{Path, PathBuf};

/// The files that may carry `#[allow(unsafe_code)]`, each once: the reviewed FFI modules.
const REVIEWED_FFI: &[&str] = &[
    "net/src/lib.rs",                // `mod udp`: recvmmsg/sendmmsg, poll, eventfd
    "loadgen/src/lib.rs",            // `mod wire`: SO_TIMESTAMPNS, recvmsg control messages
    "benches/src/counting_alloc.rs", // the counting `GlobalAlloc`
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace members, as the root manifest lists them.
fn members() -> Vec<String> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("the root manifest lists its members on one line");
    let list = &line[line.find('[').unwrap() + 1..line.rfind(']').unwrap()];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_owned())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Rust files under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn denies_unsafe(source: &str) -> bool {
    source.contains("#![deny(unsafe_code)]") || source.contains("#![forbid(unsafe_code)]")
}

#[test]
fn every_crate_denies_unsafe_code_at_its_root_and_opts_into_the_workspace_lints() {
    let members = members();
    assert!(members.len() >= 9, "members: {members:?}");
    let mut roots = Vec::new();
    for member in &members {
        let dir = root().join(member);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        let lints = manifest
            .split("\n[")
            .find(|table| table.starts_with("lints]"))
            .unwrap_or_else(|| panic!("{member}/Cargo.toml has no [lints] table"));
        assert!(
            lints.contains("workspace = true"),
            "{member}/Cargo.toml does not use the workspace lints (unsafe_code = deny)"
        );
        for root_file in ["src/lib.rs", "src/main.rs"] {
            let path = dir.join(root_file);
            if path.exists() {
                roots.push(path);
            }
        }
    }
    let mut fuzz_targets = Vec::new();
    rust_files(&root().join("fuzz/fuzz_targets"), &mut fuzz_targets);
    assert!(!fuzz_targets.is_empty());
    roots.extend(fuzz_targets);
    let missing: Vec<_> = roots
        .iter()
        .filter(|path| !denies_unsafe(&std::fs::read_to_string(path).unwrap()))
        .collect();
    assert!(
        missing.is_empty(),
        "crate roots without #![deny(unsafe_code)]: {missing:?}"
    );
}

#[test]
fn unsafe_code_is_allowed_only_on_the_reviewed_ffi_modules() {
    let mut files = Vec::new();
    for member in members() {
        for dir in ["src", "tests", "benches", "examples"] {
            rust_files(&root().join(&member).join(dir), &mut files);
        }
    }
    rust_files(&root().join("fuzz/fuzz_targets"), &mut files);
    // The root package's `benches` folder is also the `benches` member.
    files.sort();
    files.dedup();
    let mut allowed = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).unwrap();
        // Outer attributes only: this file names the attribute in strings, never as one.
        let count = source
            .lines()
            .filter(|l| l.trim_start().starts_with("#[allow(unsafe_code)]"))
            .count();
        let relative = file
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        if count > 0 {
            allowed.push((relative, count));
        }
    }
    allowed.sort();
    let mut expected: Vec<(String, usize)> =
        REVIEWED_FFI.iter().map(|f| ((*f).to_owned(), 1)).collect();
    expected.sort();
    assert_eq!(
        allowed, expected,
        "#[allow(unsafe_code)] outside the reviewed FFI modules (or one of them changed)"
    );
}
