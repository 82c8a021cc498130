//! Test helpers: an rcgen CA issuing leaf certificates into a tempdir.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};

use crate::config::{CertSource, TlsConfig, TlsFile};

pub struct TestCa {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub fingerprint: String,
}

impl TestCa {
    pub fn new() -> Self {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "hotplex test CA");
        let issuer =
            CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca");
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// Leaf for `names`; `not_after` = (y, m, d) or rcgen's default (far future).
    pub fn leaf(&self, names: &[&str], not_after: Option<(i32, u8, u8)>) -> Leaf {
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        if let Some((y, m, d)) = not_after {
            p.not_before = rcgen::date_time_ymd(2000, 1, 1);
            p.not_after = rcgen::date_time_ymd(y, m, d);
        }
        let key = KeyPair::generate().expect("key");
        let cert = p.signed_by(&key, &self.issuer).expect("sign");
        let fingerprint = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(cert.der()))
        };
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint,
        }
    }
}

impl Leaf {
    /// Write `<stem>.crt` (leaf + CA chain when given) and `<stem>.key` into `dir`.
    pub fn write(&self, dir: &Path, stem: &str, chain: Option<&str>) -> (PathBuf, PathBuf) {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        let mut pem = self.cert_pem.clone();
        if let Some(ch) = chain {
            pem.push_str(ch);
        }
        std::fs::write(&c, pem).expect("write cert");
        std::fs::write(&k, &self.key_pem).expect("write key");
        (c, k)
    }
}

/// Default config plus the given (names, cert, key) sources.
pub fn config_with(sources: &[(&[&str], &Path, &Path)]) -> TlsConfig {
    let mut cfg = serde_yaml::from_str::<TlsFile>("{}")
        .expect("yaml")
        .validate()
        .expect("valid");
    cfg.certificates = sources
        .iter()
        .enumerate()
        .map(|(i, (names, c, k))| CertSource {
            label: format!("tls.certificates[{i}]"),
            server_names: names.iter().map(|s| s.to_string()).collect(),
            cert: c.to_path_buf(),
            key: k.to_path_buf(),
        })
        .collect();
    cfg
}

/// (year, month, day) `days` days from now (UTC), civil-from-days.
pub fn ymd_in_days(days: i64) -> (i32, u8, u8) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let z = now.div_euclid(86_400) + days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}
