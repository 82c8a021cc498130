//! Proxy e2e: `hotplex-proxy check FILE` (nginx -t style) exit codes and messages.

use crate::support::proxy::check;

fn conf(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../conf")
        .join(name)
}

#[test]
fn shipped_configs_are_valid() {
    for name in ["hotplex.yaml", "hotplex.default.yaml"] {
        let (code, out, err) = check(&conf(name));
        assert_eq!(code, 0, "{name}: {err}");
        assert!(out.contains("is valid"), "{out}");
        assert!(out.contains("w1=127.0.0.1:8081"), "{out}");
    }
}

#[test]
fn invalid_configs_exit_non_zero_naming_file_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            "workers:\n  - id: w1\n    address: 127.0.0.1:1\n  - id: w2\n    address: 127.0.0.1:2\n  - id: w3\n    address: not-an-address\n",
            "workers[2].address",
        ),
        ("workers:\n  - id: w1\n    address: 127.0.0.1:1\n    wieght: 2\n", "wieght"),
        ("workers:\n  - id: w1\n    address: 127.0.0.1:1\nhealth_check:\n  interval: often\n", "health_check.interval"),
        ("workers: []\n", "workers"),
        ("workers:\n  - id: Bad_Id\n    address: 127.0.0.1:1\n", "workers[0].id"),
    ];
    for (i, (yaml, key)) in cases.iter().enumerate() {
        let f = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&f, yaml).expect("write");
        let (code, _, err) = check(&f);
        assert_eq!(code, 1, "case {i}: {err}");
        assert!(
            err.contains(&f.display().to_string()),
            "names the file: {err}"
        );
        assert!(err.contains(key), "names {key}: {err}");
    }
    let (code, _, err) = check(&dir.path().join("missing.yaml"));
    assert_eq!(code, 1);
    assert!(err.contains("missing.yaml"), "{err}");
}

/// `make run`'s editable config: `default-config` prints the embedded default, which
/// checks as valid from a file (so edit, check, reload works on it).
#[test]
fn the_default_config_is_printed_and_checks_as_a_file() {
    let out = std::process::Command::new(crate::support::proxy::PROXY_BIN)
        .arg("default-config")
        .output()
        .expect("run default-config");
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).expect("utf-8");
    let shipped = std::fs::read_to_string(conf("hotplex.default.yaml")).expect("read");
    assert_eq!(printed, shipped);
    let dir = tempfile::tempdir().expect("tempdir");
    let f = dir.path().join("hotplex.yaml");
    std::fs::write(&f, &printed).expect("write");
    let (code, out, err) = check(&f);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("is valid"), "{out}");
    // The bad-config case that follows an edit: named by file, key and reason.
    std::fs::write(&f, printed.replace("interval: 2s", "interval: often")).expect("write");
    let (code, _, err) = check(&f);
    assert_eq!(code, 1);
    assert!(err.contains("health_check.interval"), "{err}");
}
