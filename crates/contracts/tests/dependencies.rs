//! `keel-contracts` is linked into every service and must stay light.

use std::process::Command;

#[test]
fn contracts_depend_on_nothing_heavy() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "-p",
            "keel-contracts",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let heavy = [
        "actix-web",
        "lapin",
        "tokio-postgres",
        "deadpool-postgres",
        "redis",
        "reqwest",
        "tokio",
    ];
    let offenders: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| heavy.contains(name))
        .collect();
    assert!(
        offenders.is_empty(),
        "keel-contracts pulls in {offenders:?}:\n{tree}"
    );
}
