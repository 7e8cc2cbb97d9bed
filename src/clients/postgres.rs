//! Postgres connections from a `DATABASE_URL`, honouring libpq's `sslmode` (disable, prefer,
//! require, verify-ca, verify-full) and `sslrootcert` with rustls, with connect and statement
//! timeouts. Errors name host:port, never the password.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use postgres::config::{Host, SslMode as DriverSslMode};
use postgres::{Client, Config, NoTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::redact::{redact, Secret};

/// Statements slower than this are cancelled by the server.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

pub struct Target {
    config: Config,
    ssl: SslMode,
    root_cert: Option<String>,
    /// `host:port` for messages.
    pub shown: String,
}

impl Target {
    pub fn parse(url: &Secret) -> anyhow::Result<Target> {
        let raw = url.expose();
        let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
        let mut ssl = SslMode::Prefer;
        let mut root_cert = None;
        let mut schema = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "sslmode" => {
                    ssl = match v {
                        "disable" => SslMode::Disable,
                        "allow" | "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-ca" => SslMode::VerifyCa,
                        "verify-full" => SslMode::VerifyFull,
                        other => bail!("DATABASE_URL has sslmode={other:?}: use disable, prefer, require, verify-ca or verify-full"),
                    }
                }
                "sslrootcert" => root_cert = Some(percent_decode(v)),
                // Prisma's `schema`: where the webapp's tables live, so our search path.
                "schema" => schema = Some(schema_name(&percent_decode(v))?),
                k if IGNORED_PARAMS.contains(&k) => {}
                k if DRIVER_PARAMS.contains(&k) => kept.push(pair),
                other => bail!(
                    "DATABASE_URL has an unknown parameter {:?}: remove it (ops understands libpq's parameters and Prisma's: schema, connection_limit, pool_timeout, pgbouncer, …)",
                    redact(&percent_decode(other))
                ),
            }
        }
        let driver_url = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = Config::from_str(&driver_url)
            .map_err(|e| anyhow!("DATABASE_URL is not a valid Postgres URL: {} (expected postgresql://user:password@host:port/db)", redact(&e.to_string())))?;
        config.ssl_mode(match ssl {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            _ => DriverSslMode::Require,
        });
        let mut options = format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis());
        if let Some(schema) = &schema {
            options.push_str(&format!(" -c search_path=\"{schema}\""));
        }
        config.options(&options);
        config.application_name("trigger-ops");
        let host = config
            .get_hosts()
            .first()
            .map(|h| match h {
                Host::Tcp(h) => h.clone(),
                Host::Unix(p) => p.display().to_string(),
            })
            .unwrap_or_else(|| "localhost".into());
        let port = config.get_ports().first().copied().unwrap_or(5432);
        Ok(Target {
            config,
            ssl,
            root_cert,
            shown: format!("{host}:{port}"),
        })
    }

    pub fn connect(&self, timeout: Duration) -> anyhow::Result<Client> {
        let mut config = self.config.clone();
        config.connect_timeout(timeout.max(Duration::from_millis(100)));
        let result = match self.ssl {
            SslMode::Disable => config.connect(NoTls),
            _ => config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(self.tls()?)),
        };
        result.map_err(|e| {
            anyhow!(
                "cannot connect to Postgres at {}: {}",
                self.shown,
                describe(&e)
            )
        })
    }

    fn tls(&self) -> anyhow::Result<ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .context("TLS setup")?;
        let config = match self.ssl {
            // libpq semantics: encrypt, but do not verify the certificate.
            SslMode::Prefer | SslMode::Require => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
                .with_no_client_auth(),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.roots()?);
                let inner =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .context("TLS verifier")?;
                let verifier: Arc<dyn ServerCertVerifier> = if self.ssl == SslMode::VerifyCa {
                    Arc::new(ChainOnly(inner))
                } else {
                    inner
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
            SslMode::Disable => unreachable!("no TLS for sslmode=disable"),
        };
        Ok(config)
    }

    fn roots(&self) -> anyhow::Result<RootCertStore> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(path) => {
                use rustls::pki_types::pem::PemObject;
                let certs: Vec<CertificateDer> = CertificateDer::pem_file_iter(path)
                    .with_context(|| format!("cannot read sslrootcert {path}"))?
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("sslrootcert {path} is not PEM"))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    bail!("sslrootcert {path} holds no usable certificate");
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        Ok(roots)
    }
}

/// Parameters the driver understands (passed on as they are).
const DRIVER_PARAMS: &[&str] = &[
    "user",
    "password",
    "dbname",
    "host",
    "hostaddr",
    "port",
    "application_name",
    "connect_timeout",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "keepalives_retries",
    "target_session_attrs",
    "load_balance_hosts",
];

/// Parameters that mean nothing to one short read-only session: libpq's client-certificate and
/// encryption options the driver lacks, and Prisma's pool and engine settings (Trigger.dev's own
/// `DATABASE_URL` carries them; operators paste it as it is).
const IGNORED_PARAMS: &[&str] = &[
    "sslcert",
    "sslkey",
    "sslcrl",
    "sslnegotiation",
    "channel_binding",
    "gssencmode",
    "options",
    "connection_limit",
    "pool_timeout",
    "pgbouncer",
    "statement_cache_size",
    "socket_timeout",
    "sslidentity",
    "sslpassword",
    "sslaccept",
    "max_connection_lifetime",
    "max_idle_connection_lifetime",
];

/// A schema name ops can put in `search_path` without quoting trouble.
fn schema_name(v: &str) -> anyhow::Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '$');
    if !ok {
        bail!(
            "DATABASE_URL has schema={v:?}: use the schema's plain name (letters, digits, _ and -)"
        );
    }
    Ok(v.to_string())
}

/// The driver's error, with the server's message and SQLSTATE when there is one.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return redact(&format!("{} (SQLSTATE {})", db.message(), db.code().code()));
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    redact(&text)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end: &CertificateDer<'_>,
        inter: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end, inter, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::NotValidForName))
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(m, c, d)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sslmodes_and_hides_the_password() {
        let t = Target::parse(&Secret::new("postgresql://u:pw-secret-123@db.example.com:6543/app?sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem")).unwrap();
        assert_eq!(t.ssl, SslMode::VerifyFull);
        assert_eq!(t.root_cert.as_deref(), Some("/tmp/ca.pem"));
        assert_eq!(t.shown, "db.example.com:6543");
        let e = Target::parse(&Secret::new(
            "postgresql://u:pw-secret-123@h/x?sslmode=sometimes",
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("sslmode") && !e.contains("pw-secret-123"));
        assert_eq!(
            Target::parse(&Secret::new("postgres://h/x")).unwrap().ssl,
            SslMode::Prefer
        );
    }

    #[test]
    fn prisma_urls_as_trigger_dev_writes_them_are_accepted() {
        let t = Target::parse(&Secret::new(
            "postgresql://u:pw@db:5432/trigger?schema=public&connection_limit=5&pool_timeout=10&pgbouncer=true&statement_cache_size=0&socket_timeout=30&sslaccept=strict&connect_timeout=7",
        ))
        .unwrap();
        assert_eq!(t.shown, "db:5432");
        assert_eq!(
            t.config.get_options(),
            Some("-c statement_timeout=30000 -c search_path=\"public\"")
        );
        assert_eq!(
            t.config.get_connect_timeout(),
            Some(&Duration::from_secs(7))
        );
        let t = Target::parse(&Secret::new(
            "postgresql://u:pw@db/trigger?schema=trigger_v4",
        ))
        .unwrap();
        assert!(t
            .config
            .get_options()
            .unwrap()
            .ends_with("search_path=\"trigger_v4\""));
        // Without `schema` the server's default search path stands.
        let t = Target::parse(&Secret::new("postgresql://u:pw@db/trigger")).unwrap();
        assert_eq!(t.config.get_options(), Some("-c statement_timeout=30000"));
    }

    #[test]
    fn an_unknown_parameter_or_a_strange_schema_is_named() {
        let e = |url: &str| Target::parse(&Secret::new(url)).err().unwrap().to_string();
        let unknown = e("postgresql://u:pw-secret-123@db/x?schema=public&conection_limit=5");
        assert!(
            unknown.contains("unknown parameter \"conection_limit\""),
            "{unknown}"
        );
        assert!(!unknown.contains("pw-secret-123"));
        let schema = e("postgresql://u:pw@db/x?schema=a%22b");
        assert!(schema.contains("schema=\"a\\\"b\""), "{schema}");
    }
}
