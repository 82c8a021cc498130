//! The file layer's defaults: what an empty config yields, and what conf/hotplex.yaml
//! documents.

use super::security::{
    DEFAULT_ALLOW_ANONYMOUS, DEFAULT_ALLOW_STREAMED_BODIES, DEFAULT_AUTH_ENABLED,
    DEFAULT_BODY_READ_TIMEOUT, DEFAULT_H2_IDLE_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_TRACKED_KEYS,
    DEFAULT_PUBLIC_PATHS,
};
use super::*;

/// The reference config, which documents every key with its default.
const REFERENCE: &str = include_str!("../../../../conf/hotplex.yaml");

/// `key.path -> the "Default: X" of the comment block above the key` for every key
/// set in `REFERENCE` whose comment names a default (list items are skipped).
fn documented_defaults() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut comment = String::new();
    for line in REFERENCE.lines() {
        let t = line.trim();
        if let Some(c) = t.strip_prefix('#') {
            comment.push(' ');
            comment.push_str(c.trim());
            continue;
        }
        let Some((key, _)) = t.split_once(':') else {
            comment.clear();
            continue;
        };
        if t.starts_with('-')
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            comment.clear();
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        stack.push((indent, key.to_string()));
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).collect();
        // The last "Default:" of the block is the key's own (a block may first describe
        // a commented-out key).
        if let Some(at) = comment.rfind("Default: ") {
            let d = comment[at + "Default: ".len()..]
                .split_whitespace()
                .next()
                .unwrap_or("");
            out.push((path.join("."), d.trim_end_matches(['.', ',']).to_string()));
        }
        comment.clear();
    }
    out
}

/// A minimal config with `path` set to `value` (nested maps for a dotted path).
fn with(path: &str, value: &str) -> String {
    let mut yaml = String::from("workers: [{id: w1, address: 127.0.0.1:8081}]\n");
    for (depth, k) in path.split('.').enumerate() {
        yaml.push_str(&"  ".repeat(depth));
        yaml.push_str(k);
        yaml.push(':');
        yaml.push(if depth + 1 == path.split('.').count() {
            ' '
        } else {
            '\n'
        });
    }
    yaml.push_str(value);
    yaml.push('\n');
    yaml
}

fn file(yaml: &str) -> FileConfig {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

#[test]
fn an_empty_config_yields_the_default_constants() {
    let f = file("workers: [{id: w1, address: 127.0.0.1:8081}]\n");
    assert_eq!(f.listen, DEFAULT_LISTEN);
    assert_eq!(f.admin.listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(f.threads, DEFAULT_THREADS);
    assert_eq!(f.work_stealing, DEFAULT_WORK_STEALING);
    assert_eq!(f.buffers.read, DEFAULT_READ_BUFFER);
    assert_eq!(f.buffers.tls_read, DEFAULT_TLS_READ_BUFFER);
    assert_eq!(f.buffers.write, DEFAULT_WRITE_BUFFER);
    assert_eq!(
        (f.workers[0].weight, f.workers[0].capacity),
        (DEFAULT_WEIGHT, DEFAULT_CAPACITY)
    );
    assert_eq!(f.routing.key_sources, DEFAULT_KEY_SOURCES);
    assert_eq!(f.routing.affinity_secrets, [DEFAULT_DEV_SECRET]);
    assert_eq!(f.health_check.path, DEFAULT_HEALTH_PATH);
    assert_eq!(f.health_check.interval, DEFAULT_HEALTH_INTERVAL);
    assert_eq!(f.health_check.timeout, DEFAULT_HEALTH_TIMEOUT);
    assert_eq!(f.health_check.failures, DEFAULT_HEALTH_FAILURES);
    assert_eq!(f.health_check.successes, DEFAULT_HEALTH_SUCCESSES);
    assert_eq!(
        (f.ejection.base, f.ejection.max),
        (DEFAULT_EJECTION_BASE, DEFAULT_EJECTION_MAX)
    );
    assert_eq!(f.timeouts.connect, DEFAULT_CONNECT_TIMEOUT);
    assert_eq!(f.timeouts.read, DEFAULT_READ_TIMEOUT);
    assert_eq!(f.timeouts.write, DEFAULT_WRITE_TIMEOUT);
    assert_eq!(f.timeouts.stream_idle, DEFAULT_STREAM_IDLE_TIMEOUT);
    assert_eq!(f.upstream.keepalive_pool_size, DEFAULT_KEEPALIVE_POOL_SIZE);
    assert_eq!(f.upstream.keepalive_idle, DEFAULT_KEEPALIVE_IDLE);
    assert_eq!(f.workers_removal_grace, DEFAULT_WORKERS_REMOVAL_GRACE);
    assert_eq!(f.upgrade.grace_period, DEFAULT_UPGRADE_GRACE_PERIOD);
    assert_eq!(f.upgrade.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    assert_eq!(f.log.level, DEFAULT_LOG_LEVEL);
    assert_eq!(
        f.worker_auth.allow_address_translation,
        DEFAULT_ALLOW_ADDRESS_TRANSLATION
    );
    assert_eq!(
        f.security.refuse_readable_secrets,
        hotplex_common::secrets::DEFAULT_REFUSE_READABLE_SECRETS
    );
    assert_eq!(f.auth.enabled, DEFAULT_AUTH_ENABLED);
    assert_eq!(f.auth.allow_anonymous, DEFAULT_ALLOW_ANONYMOUS);
    assert_eq!(f.auth.public_paths, DEFAULT_PUBLIC_PATHS);
    let l = &f.limits;
    assert_eq!(l.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(l.allow_streamed_bodies, DEFAULT_ALLOW_STREAMED_BODIES);
    assert_eq!(l.max_tracked_keys, DEFAULT_MAX_TRACKED_KEYS);
    assert_eq!(l.body_read_timeout, DEFAULT_BODY_READ_TIMEOUT);
    assert_eq!(l.h2_idle_timeout, DEFAULT_H2_IDLE_TIMEOUT);
    assert_eq!(l.max_connections, DEFAULT_MAX_CONNECTIONS);
    assert_eq!(l.header_read_timeout, DEFAULT_HEADER_READ_TIMEOUT);
}

/// Every default conf/hotplex.yaml documents ("Default: X") is what the code uses: the
/// key set to X parses to the same value as the key left out.
#[test]
fn the_reference_config_documents_the_code_defaults() {
    // Read one field of a parsed config, by key path.
    type Field = fn(&FileConfig) -> String;
    let fields: &[(&str, Field)] = &[
        ("listen", |f| f.listen.clone()),
        ("threads", |f| f.threads.to_string()),
        ("work_stealing", |f| f.work_stealing.to_string()),
        ("buffers.read", |f| f.buffers.read.to_string()),
        ("buffers.tls_read", |f| f.buffers.tls_read.to_string()),
        ("buffers.write", |f| f.buffers.write.to_string()),
        ("admin.listen", |f| f.admin.listen.clone()),
        ("admin.hosts", |f| format!("{:?}", f.admin.hosts)),
        ("workers_removal_grace", |f| {
            format!("{:?}", f.workers_removal_grace)
        }),
        ("upgrade.grace_period", |f| {
            format!("{:?}", f.upgrade.grace_period)
        }),
        ("upgrade.shutdown_timeout", |f| {
            format!("{:?}", f.upgrade.shutdown_timeout)
        }),
        ("health_check.path", |f| f.health_check.path.clone()),
        ("health_check.interval", |f| {
            format!("{:?}", f.health_check.interval)
        }),
        ("health_check.timeout", |f| {
            format!("{:?}", f.health_check.timeout)
        }),
        ("health_check.failures", |f| {
            f.health_check.failures.to_string()
        }),
        ("health_check.successes", |f| {
            f.health_check.successes.to_string()
        }),
        ("timeouts.connect", |f| format!("{:?}", f.timeouts.connect)),
        ("timeouts.read", |f| format!("{:?}", f.timeouts.read)),
        ("timeouts.write", |f| format!("{:?}", f.timeouts.write)),
        ("timeouts.stream_idle", |f| {
            format!("{:?}", f.timeouts.stream_idle)
        }),
        ("upstream.keepalive_pool_size", |f| {
            f.upstream.keepalive_pool_size.to_string()
        }),
        ("upstream.keepalive_idle", |f| {
            format!("{:?}", f.upstream.keepalive_idle)
        }),
        ("log.format", |f| format!("{:?}", f.log.format)),
        ("log.level", |f| f.log.level.clone()),
        ("security.refuse_readable_secrets", |f| {
            f.security.refuse_readable_secrets.to_string()
        }),
        ("auth.enabled", |f| f.auth.enabled.to_string()),
        ("auth.allow_anonymous", |f| {
            f.auth.allow_anonymous.to_string()
        }),
        ("auth.public_paths", |f| {
            format!("{:?}", f.auth.public_paths)
        }),
        ("limits.max_body_bytes", |f| {
            f.limits.max_body_bytes.to_string()
        }),
        ("limits.allow_streamed_bodies", |f| {
            f.limits.allow_streamed_bodies.to_string()
        }),
        ("limits.body_read_timeout", |f| {
            format!("{:?}", f.limits.body_read_timeout)
        }),
        ("limits.h2_idle_timeout", |f| {
            format!("{:?}", f.limits.h2_idle_timeout)
        }),
        ("limits.max_tracked_keys", |f| {
            f.limits.max_tracked_keys.to_string()
        }),
        ("limits.max_connections", |f| {
            f.limits.max_connections.to_string()
        }),
        ("limits.header_read_timeout", |f| {
            format!("{:?}", f.limits.header_read_timeout)
        }),
    ];
    let documented = documented_defaults();
    let base = file("workers: [{id: w1, address: 127.0.0.1:8081}]\n");
    for (path, read) in fields {
        let Some((_, doc)) = documented.iter().find(|(k, _)| k == path) else {
            panic!("conf/hotplex.yaml documents no \"Default: ...\" for {path}");
        };
        let set = file(&with(path, doc));
        assert_eq!(
            read(&set),
            read(&base),
            "{path}: conf/hotplex.yaml says \"Default: {doc}\", the code's default differs"
        );
    }
}
