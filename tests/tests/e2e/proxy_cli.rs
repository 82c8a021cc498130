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
