//! The cluster CA on disk and the certificates it issues.

use std::fs;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agora_pki::{
    CA_CERT_FILE, CA_KEY_FILE, CaCertificate, CertRenewal, ClusterCa, Identity, LeafRequest,
    PkiError, Usage, identity_of,
};
use rcgen::PublicKeyData;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn mode_of(path: &std::path::Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn create_writes_the_ca_files_with_their_modes_and_load_reads_the_same_ca() {
    let dir = tempfile::tempdir().unwrap();
    let created = ClusterCa::create(dir.path()).unwrap();
    assert_eq!(mode_of(&dir.path().join(CA_CERT_FILE)), 0o644);
    assert_eq!(mode_of(&dir.path().join(CA_KEY_FILE)), 0o600);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != CA_CERT_FILE && name != CA_KEY_FILE)
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");

    let loaded = ClusterCa::load(dir.path()).unwrap();
    assert_eq!(loaded.fingerprint(), created.fingerprint());
    let on_disk = CaCertificate::load(&ClusterCa::cert_path(dir.path())).unwrap();
    assert_eq!(on_disk.fingerprint(), created.fingerprint());
    assert_eq!(
        created.fingerprint().to_string(),
        agora_pki::Fingerprint::of(created.certificate().der()).to_string()
    );

    // A certificate the loaded CA issues chains to the created one.
    let issued = loaded
        .issue(
            &LeafRequest::new(Identity::Agent("a1".into())),
            SystemTime::now(),
        )
        .unwrap();
    let (_, leaf) = X509Certificate::from_der(&issued.cert_der).unwrap();
    let (_, ca) = X509Certificate::from_der(created.certificate().der()).unwrap();
    assert_eq!(leaf.issuer(), ca.subject());
}

#[test]
fn create_never_replaces_a_ca_and_load_or_create_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let first = ClusterCa::load_or_create(dir.path()).unwrap();
    let again = ClusterCa::load_or_create(dir.path()).unwrap();
    assert_eq!(first.fingerprint(), again.fingerprint());
    let error = ClusterCa::create(dir.path()).unwrap_err();
    assert!(matches!(error, PkiError::AlreadyExists { .. }), "{error}");
    assert!(error.to_string().contains("refusing to replace"), "{error}");

    fs::remove_file(dir.path().join(CA_KEY_FILE)).unwrap();
    let error = ClusterCa::load_or_create(dir.path()).unwrap_err();
    assert!(matches!(error, PkiError::Io { .. }), "{error}");
}

#[test]
fn load_refuses_an_open_key_file_and_a_key_of_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    ClusterCa::create(dir.path()).unwrap();
    let key_path = dir.path().join(CA_KEY_FILE);
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let error = ClusterCa::load(dir.path()).unwrap_err();
    assert!(
        matches!(error, PkiError::KeyFileTooOpen { mode: 0o644, .. }),
        "{error}"
    );
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();

    let other = tempfile::tempdir().unwrap();
    ClusterCa::create(other.path()).unwrap();
    fs::copy(other.path().join(CA_KEY_FILE), &key_path).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    let error = ClusterCa::load(dir.path()).unwrap_err();
    assert!(matches!(error, PkiError::KeyMismatch { .. }), "{error}");

    fs::write(dir.path().join(CA_CERT_FILE), "not a certificate").unwrap();
    let error = ClusterCa::load(dir.path()).unwrap_err();
    assert!(matches!(error, PkiError::Pem { .. }), "{error}");
    assert!(error.to_string().contains(CA_CERT_FILE), "{error}");
}

#[test]
fn issued_certificates_name_each_kind_of_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(dir.path()).unwrap();
    for identity in [
        Identity::Agent("0b6f8a3e-agent".into()),
        Identity::Framework("svc-principal".into()),
        Identity::Operator("alice".into()),
        Identity::Daemon("master".into()),
    ] {
        let issued = ca
            .issue(&LeafRequest::new(identity.clone()), SystemTime::now())
            .unwrap();
        assert_eq!(identity_of(&issued.cert_der).unwrap(), identity);
        assert!(issued.key_pem.as_deref().unwrap().contains("PRIVATE KEY"));
        assert!(issued.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    }
}

#[test]
fn a_server_certificate_carries_its_names_usages_and_validity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(dir.path()).unwrap();
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let request = LeafRequest::new(Identity::Daemon("svcframework".into()))
        .serving(
            vec!["localhost".into(), "svc.example".into()],
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        )
        .lifetime(Duration::from_secs(3 * 3600));
    assert_eq!(request.usage, Usage::ClientAndServer);
    let issued = ca.issue(&request, now).unwrap();
    let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();

    let names = cert.subject_alternative_name().unwrap().unwrap();
    let names: Vec<String> = names
        .value
        .general_names
        .iter()
        .map(|name| match name {
            GeneralName::URI(uri) => (*uri).to_owned(),
            GeneralName::DNSName(dns_name) => (*dns_name).to_owned(),
            GeneralName::IPAddress(octets) => format!("{octets:?}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert!(
        names
            .iter()
            .any(|name| name.contains("agora://daemon/svcframework")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|name| name.contains("svc.example")),
        "{names:?}"
    );
    assert!(
        names.iter().any(|name| name == "[127, 0, 0, 1]"),
        "{names:?}"
    );

    let usages = cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usages.server_auth && usages.client_auth);
    assert!(!cert.is_ca());

    let validity = CertRenewal::of(&issued.cert_der).unwrap();
    assert_eq!(validity.not_before_unix_seconds(), 1_800_000_000 - 300);
    assert_eq!(validity.not_after_unix_seconds(), 1_800_000_000 + 3 * 3600);

    let agent = ca
        .issue(&LeafRequest::new(Identity::Agent("a".into())), now)
        .unwrap();
    let (_, agent_cert) = X509Certificate::from_der(&agent.cert_der).unwrap();
    let usages = agent_cert.extended_key_usage().unwrap().unwrap().value;
    assert!(usages.client_auth && !usages.server_auth);
}

#[test]
fn a_holder_can_keep_its_key_and_send_only_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(dir.path()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let public_key = key.subject_public_key_info();
    let request =
        LeafRequest::new(Identity::Framework("batch".into())).public_key(public_key.clone());
    let issued = ca.issue(&request, SystemTime::now()).unwrap();
    assert!(issued.key_pem.is_none());
    let (_, cert) = X509Certificate::from_der(&issued.cert_der).unwrap();
    assert_eq!(cert.public_key().raw, public_key.as_slice());
    assert!(!format!("{issued:?}").contains("PRIVATE"));

    let garbage = LeafRequest::new(Identity::Framework("batch".into())).public_key(vec![1, 2, 3]);
    let error = ca.issue(&garbage, SystemTime::now()).unwrap_err();
    assert!(
        error.to_string().contains("SubjectPublicKeyInfo"),
        "{error}"
    );
}

#[test]
fn bad_requests_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(dir.path()).unwrap();
    let now = SystemTime::now();
    let short = LeafRequest::new(Identity::Agent("a".into())).lifetime(Duration::from_secs(1));
    let error = ca.issue(&short, now).unwrap_err().to_string();
    assert_eq!(
        error,
        "certificate lifetime of 1 s: shorter than the minimum of 60 s"
    );
    let long = LeafRequest::new(Identity::Agent("a".into()))
        .lifetime(Duration::from_secs(2 * 365 * 24 * 3600));
    assert!(
        ca.issue(&long, now)
            .unwrap_err()
            .to_string()
            .contains("maximum of one year")
    );
    let slash = LeafRequest::new(Identity::Agent("a/b".into()));
    let error = ca.issue(&slash, now).unwrap_err();
    assert!(
        matches!(error, PkiError::InvalidName { kind: "agent", .. }),
        "{error}"
    );
    let unicode_dns = LeafRequest::new(Identity::Daemon("master".into()))
        .serving(vec!["bücher.example".into()], Vec::new());
    let error = ca.issue(&unicode_dns, now).unwrap_err();
    assert!(
        matches!(error, PkiError::InvalidName { kind: "DNS", .. }),
        "{error}"
    );
}

#[test]
fn certificates_with_no_or_several_identities_are_refused() {
    let key = rcgen::KeyPair::generate().unwrap();
    let make = |uris: &[&str]| {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().unwrap()));
        }
        params.self_signed(&key).unwrap().der().to_vec()
    };
    assert!(matches!(identity_of(&make(&[])), Err(PkiError::NoIdentity)));
    assert!(matches!(
        identity_of(&make(&["https://example.org/agent"])),
        Err(PkiError::NoIdentity)
    ));
    let several = identity_of(&make(&["agora://agent/a", "agora://operator/root"])).unwrap_err();
    assert!(
        matches!(several, PkiError::SeveralIdentities { count: 2 }),
        "{several}"
    );
    assert_eq!(
        identity_of(&make(&["https://example.org", "agora://agent/a"])).unwrap(),
        Identity::Agent("a".into())
    );
    let malformed = identity_of(&make(&["agora://robot/r2"])).unwrap_err();
    assert!(
        matches!(malformed, PkiError::InvalidIdentity { .. }),
        "{malformed}"
    );
}

#[test]
fn renewal_is_due_past_two_thirds_of_the_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create(dir.path()).unwrap();
    let issued_at = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let request =
        LeafRequest::new(Identity::Agent("a".into())).lifetime(Duration::from_secs(3 * 3600));
    let issued = ca.issue(&request, issued_at).unwrap();
    let renewal = CertRenewal::of(&issued.cert_der).unwrap();
    // The window is 300 s of skew allowance plus 3 h: 11100 s; two thirds is 7400 s.
    assert_eq!(renewal.renew_at_unix_seconds(), 1_800_000_000 - 300 + 7400);
    let at = |offset: i64| UNIX_EPOCH + Duration::from_secs((1_800_000_000 + offset) as u64);
    assert!(!renewal.needs_renewal(at(0)));
    assert!(!renewal.needs_renewal(at(7099)));
    assert!(renewal.needs_renewal(at(7100)));
    assert!(!renewal.is_expired(at(10_799)));
    assert!(renewal.is_expired(at(10_800)));
    assert!(renewal.needs_renewal(at(100_000)));
    assert!(CertRenewal::of(b"garbage").is_err());
}
