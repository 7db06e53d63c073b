//! Real TLS handshakes over 127.0.0.1 with the configurations the crate builds.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use agora_pki::{
    ClientAuth, ClusterCa, Credentials, Identity, LeafRequest, client_config, client_config_pinned,
    peer_identity, server_config,
};
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long one handshake and echo may take before the test fails.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// What each side saw: the identity the other side's certificate names (if any), or why
/// the connection failed.
#[derive(Debug)]
struct Outcome {
    server: Result<Option<Identity>, String>,
    client: Result<Option<Identity>, String>,
}

/// Serves one connection with `server` and connects to it with `client` as "localhost"; each
/// side reads the peer's identity, then one byte goes back and forth.
async fn handshake(server: ServerConfig, client: ClientConfig) -> Outcome {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(server));
    let server_side = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.map_err(|error| error.to_string())?;
        let mut stream = acceptor
            .accept(tcp)
            .await
            .map_err(|error| error.to_string())?;
        let identity = peer_identity(stream.get_ref().1.peer_certificates()).ok();
        let mut byte = [0_u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|error| error.to_string())?;
        stream
            .write_all(&byte)
            .await
            .map_err(|error| error.to_string())?;
        stream.shutdown().await.map_err(|error| error.to_string())?;
        Ok::<_, String>(identity)
    });
    let client_side = async move {
        let tcp = TcpStream::connect(address)
            .await
            .map_err(|error| error.to_string())?;
        let connector = TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("localhost").unwrap().to_owned();
        let mut stream = connector
            .connect(name, tcp)
            .await
            .map_err(|error| error.to_string())?;
        let identity = peer_identity(stream.get_ref().1.peer_certificates()).ok();
        stream
            .write_all(b"x")
            .await
            .map_err(|error| error.to_string())?;
        let mut byte = [0_u8; 1];
        stream
            .read_exact(&mut byte)
            .await
            .map_err(|error| error.to_string())?;
        Ok::<_, String>(identity)
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async move {
        let client = client_side.await;
        let server = server_side.await.unwrap();
        Outcome { server, client }
    })
    .await
    .expect("the handshake and echo finish in time")
}

struct Cluster {
    _dir: tempfile::TempDir,
    ca: ClusterCa,
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = ClusterCa::create(dir.path()).unwrap();
        Self { _dir: dir, ca }
    }

    fn credentials(&self, request: LeafRequest, now: SystemTime) -> Credentials {
        Credentials::from_issued(&self.ca.issue(&request, now).unwrap()).unwrap()
    }

    fn master(&self) -> Credentials {
        let request = LeafRequest::new(Identity::Daemon("master".into())).serving(
            vec!["localhost".into()],
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        );
        self.credentials(request, SystemTime::now())
    }

    fn agent(&self, id: &str) -> Credentials {
        self.credentials(
            LeafRequest::new(Identity::Agent(id.into())),
            SystemTime::now(),
        )
    }

    fn server(&self, client_auth: ClientAuth) -> ServerConfig {
        server_config(self.ca.certificate(), &self.master(), client_auth).unwrap()
    }
}

#[tokio::test]
async fn mutual_tls_succeeds_and_each_side_sees_the_others_identity() {
    let cluster = Cluster::new();
    let client = client_config(cluster.ca.certificate(), Some(&cluster.agent("agent-7"))).unwrap();
    let outcome = handshake(cluster.server(ClientAuth::Required), client).await;
    assert_eq!(
        outcome.server,
        Ok(Some(Identity::Agent("agent-7".into()))),
        "{outcome:?}"
    );
    assert_eq!(
        outcome.client,
        Ok(Some(Identity::Daemon("master".into()))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_client_certificate_from_another_ca_fails_the_handshake() {
    let cluster = Cluster::new();
    let stranger = Cluster::new();
    let client = client_config(cluster.ca.certificate(), Some(&stranger.agent("agent-7"))).unwrap();
    let outcome = handshake(cluster.server(ClientAuth::Required), client).await;
    let error = outcome
        .server
        .as_ref()
        .expect_err("the server refuses the stranger's certificate");
    assert!(
        error.contains("UnknownIssuer") || error.contains("unknown issuer"),
        "{error}"
    );
    assert!(outcome.client.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn a_client_without_a_certificate_fails_when_one_is_required() {
    let cluster = Cluster::new();
    let client = client_config(cluster.ca.certificate(), None).unwrap();
    let outcome = handshake(cluster.server(ClientAuth::Required), client).await;
    assert!(outcome.server.is_err(), "{outcome:?}");
    assert!(outcome.client.is_err(), "{outcome:?}");

    // With client authentication optional, the same client gets through, with no identity.
    let client = client_config(cluster.ca.certificate(), None).unwrap();
    let outcome = handshake(cluster.server(ClientAuth::Optional), client).await;
    assert_eq!(outcome.server, Ok(None), "{outcome:?}");
    assert_eq!(
        outcome.client,
        Ok(Some(Identity::Daemon("master".into()))),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn an_expired_client_certificate_fails_the_handshake() {
    let cluster = Cluster::new();
    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let expired = cluster.credentials(
        LeafRequest::new(Identity::Agent("agent-7".into())).lifetime(Duration::from_secs(3600)),
        two_days_ago,
    );
    let client = client_config(cluster.ca.certificate(), Some(&expired)).unwrap();
    let outcome = handshake(cluster.server(ClientAuth::Required), client).await;
    let error = outcome
        .server
        .as_ref()
        .expect_err("the server refuses an expired certificate");
    assert!(error.to_lowercase().contains("expired"), "{error}");
    assert!(outcome.client.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn a_client_refuses_a_server_of_another_ca_or_with_an_expired_certificate() {
    let cluster = Cluster::new();
    let stranger = Cluster::new();
    let client = client_config(cluster.ca.certificate(), Some(&cluster.agent("a"))).unwrap();
    let outcome = handshake(stranger.server(ClientAuth::Required), client).await;
    assert!(outcome.client.is_err(), "{outcome:?}");
    assert!(outcome.server.is_err(), "{outcome:?}");

    let two_days_ago = SystemTime::now() - Duration::from_secs(2 * 24 * 3600);
    let expired_master = cluster.credentials(
        LeafRequest::new(Identity::Daemon("master".into()))
            .serving(vec!["localhost".into()], Vec::new())
            .lifetime(Duration::from_secs(3600)),
        two_days_ago,
    );
    let server = server_config(
        cluster.ca.certificate(),
        &expired_master,
        ClientAuth::Required,
    )
    .unwrap();
    let client = client_config(cluster.ca.certificate(), Some(&cluster.agent("a"))).unwrap();
    let outcome = handshake(server, client).await;
    let error = outcome
        .client
        .as_ref()
        .expect_err("the client refuses an expired server certificate");
    assert!(error.to_lowercase().contains("expired"), "{error}");
}

#[tokio::test]
async fn a_certificate_without_server_usage_cannot_serve() {
    // A client-only certificate cannot serve, even naming the right host: clients refuse it.
    let cluster = Cluster::new();
    let mut request = LeafRequest::new(Identity::Agent("a".into()));
    request.dns_names = vec!["localhost".into()];
    assert_eq!(request.usage, agora_pki::Usage::Client);
    let posing = cluster.credentials(request, SystemTime::now());
    let server = server_config(cluster.ca.certificate(), &posing, ClientAuth::Optional).unwrap();
    let client = client_config(cluster.ca.certificate(), None).unwrap();
    let outcome = handshake(server, client).await;
    assert!(outcome.client.is_err(), "{outcome:?}");
}

#[tokio::test]
async fn a_pinned_first_contact_trusts_the_pinned_ca_only() {
    let cluster = Cluster::new();
    let joiner = cluster.agent("joiner");
    let (client, pinned) = client_config_pinned(cluster.ca.fingerprint(), Some(&joiner)).unwrap();
    assert!(pinned.certificate().is_none());
    let outcome = handshake(cluster.server(ClientAuth::Optional), client).await;
    assert_eq!(
        outcome.client,
        Ok(Some(Identity::Daemon("master".into()))),
        "{outcome:?}"
    );
    assert_eq!(
        outcome.server,
        Ok(Some(Identity::Agent("joiner".into()))),
        "{outcome:?}"
    );
    let found = pinned
        .certificate()
        .expect("the pinned CA is kept after the handshake");
    assert_eq!(found.fingerprint(), cluster.ca.fingerprint());

    // A server of another cluster does not hold the pinned CA: refused, nothing kept.
    let stranger = Cluster::new();
    let (client, pinned) = client_config_pinned(cluster.ca.fingerprint(), None).unwrap();
    let outcome = handshake(stranger.server(ClientAuth::Optional), client).await;
    assert!(outcome.client.is_err(), "{outcome:?}");
    assert!(pinned.certificate().is_none());
}
