//! Postgres connections from a `DATABASE_URL`, honouring libpq's `sslmode` (disable, prefer,
//! require, verify-ca, verify-full) and `sslrootcert` with rustls, with connect and statement
//! timeouts. Errors name host:port, never the password.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use postgres::config::{ChannelBinding, Host, SslMode as DriverSslMode};
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
    /// `sslmode` was unset or `prefer` and is treated as `require` (a password, a host that is
    /// not local).
    implied_require: bool,
    root_cert: Option<String>,
    /// `host:port` for messages.
    pub shown: String,
}

/// libpq's `sslmode`.
fn ssl_mode(v: &str) -> anyhow::Result<SslMode> {
    Ok(match v {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        "require" => SslMode::Require,
        "verify-ca" => SslMode::VerifyCa,
        "verify-full" => SslMode::VerifyFull,
        other => bail!("DATABASE_URL has sslmode={other:?}: use disable, prefer, require, verify-ca or verify-full"),
    })
}

/// libpq's `channel_binding`.
fn binding(v: &str) -> anyhow::Result<ChannelBinding> {
    Ok(match v {
        "disable" => ChannelBinding::Disable,
        "prefer" => ChannelBinding::Prefer,
        "require" => ChannelBinding::Require,
        other => {
            bail!("DATABASE_URL has channel_binding={other:?}: use disable, prefer or require")
        }
    })
}

/// What the driver is given: the URL without the parameters ops reads itself, or libpq's
/// key=value words.
fn driver_url(is_url: bool, base: &str, kept: &[(String, String)]) -> String {
    if is_url {
        let query: Vec<String> = kept
            .iter()
            .map(|(k, v)| format!("{k}={}", crate::clients::http::percent_encode(v)))
            .collect();
        if query.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", query.join("&"))
        }
    } else {
        kept.iter()
            .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Target {
    /// A URL that cannot be used is the operator's input: a configuration error (exit 2), as
    /// `ops check` says it, whichever command meets it.
    pub fn parse(url: &Secret) -> anyhow::Result<Target> {
        Target::parse_url(url).map_err(|e| crate::exit::config_error(format!("{e:#}")))
    }

    fn parse_url(url: &Secret) -> anyhow::Result<Target> {
        let raw = url.expose().trim();
        let is_url = raw.starts_with("postgres://") || raw.starts_with("postgresql://");
        // Both forms are read the same way: the URL's query, or libpq's key=value words.
        let (base, pairs): (&str, Vec<(String, String)>) = if is_url {
            let (base, query) = raw.split_once('?').unwrap_or((raw, ""));
            let pairs = query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (k.to_string(), percent_decode(v))
                })
                .collect();
            (base, pairs)
        } else {
            ("", key_values(raw)?)
        };
        let mut ssl = None;
        let mut root_cert = None;
        let mut schema = None;
        let mut channel_binding = None;
        let mut kept: Vec<(String, String)> = Vec::new();
        for (k, v) in pairs {
            match k.as_str() {
                "sslmode" => ssl = Some(ssl_mode(&v)?),
                "sslrootcert" => root_cert = Some(v),
                // Prisma's `schema`: where the webapp's tables live, so our search path.
                "schema" => schema = Some(schema_name(&v)?),
                "channel_binding" => channel_binding = Some(binding(&v)?),
                k if IGNORED_PARAMS.contains(&k) => {}
                k if DRIVER_PARAMS.contains(&k) => kept.push((k.to_string(), v)),
                other => bail!(
                    "DATABASE_URL has an unknown parameter {:?}: remove it (ops understands libpq's parameters and Prisma's: schema, connection_limit, pool_timeout, pgbouncer, …)",
                    redact(other)
                ),
            }
        }
        let driver_url = driver_url(is_url, base, &kept);
        let mut config = Config::from_str(&driver_url)
            .map_err(|e| anyhow!("DATABASE_URL is not a valid Postgres URL: {} (expected postgresql://user:password@host:port/db)", redact(&e.to_string())))?;
        let (ssl, implied_require) = protect(&mut config, ssl, channel_binding);
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
            implied_require,
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
            let why = describe(&e);
            let hint = if self.implied_require && why.contains("TLS") {
                ": sslmode is unset (or prefer), and with a password and a server that is not on this machine ops treats that as sslmode=require, so the password was not sent (enable TLS on the server; or write sslmode=disable in DATABASE_URL to send it in clear anyway)"
            } else if why.contains("channel binding") {
                ": the server did not bind the login to the TLS session, so the password was not sent (sslmode=require implies channel_binding=require when there is a password: use SCRAM on the server, or sslmode=verify-full with sslrootcert, or set channel_binding=prefer if you accept the risk)"
            } else {
                ""
            };
            anyhow!("cannot connect to Postgres at {}: {why}{hint}", self.shown)
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

/// What the connection verifies, for `ops doctor`.
impl Target {
    pub fn protection(&self) -> String {
        let binding = match self.config.get_channel_binding() {
            ChannelBinding::Require => "channel binding required",
            ChannelBinding::Disable => "channel binding off",
            _ => "channel binding if offered",
        };
        match self.ssl {
            SslMode::Disable => {
                "no TLS (sslmode=disable): the password and data cross the network in clear".into()
            }
            SslMode::Prefer => format!("TLS if offered, certificate not verified, {binding}"),
            SslMode::Require if self.implied_require => format!("TLS, certificate not verified, {binding} (sslmode unset or prefer: require, as the password goes to another machine; sslmode=disable for clear text)"),
            SslMode::Require => format!("TLS, certificate not verified, {binding}"),
            SslMode::VerifyCa => {
                format!("TLS, certificate verified, host name not checked, {binding}")
            }
            SslMode::VerifyFull => format!("TLS, certificate and host name verified, {binding}"),
        }
    }
}

/// The TLS mode and channel binding a connection gets; whether `require` was implied.
fn protect(
    config: &mut Config,
    ssl: Option<SslMode>,
    channel_binding: Option<ChannelBinding>,
) -> (SslMode, bool) {
    // libpq's default, `prefer` (and `allow`), goes on in clear when a server (or whoever is
    // on the path) refuses TLS, and then sends the password as asked: in clear or as md5.
    // With a password and a server that is not on this machine, those mean `require`;
    // clear text only when written (`sslmode=disable`).
    let implied_require = matches!(ssl, None | Some(SslMode::Prefer))
        && config.get_password().is_some()
        && !local_only(config);
    let ssl = if implied_require {
        SslMode::Require
    } else {
        ssl.unwrap_or(SslMode::Prefer)
    };
    config.ssl_mode(match ssl {
        SslMode::Disable => DriverSslMode::Disable,
        SslMode::Prefer => DriverSslMode::Prefer,
        _ => DriverSslMode::Require,
    });
    // sslmode=require encrypts without checking who answers: with a password to protect,
    // require channel binding too (SCRAM-SHA-256-PLUS binds the login to the TLS session,
    // so a server of an attacker's cannot relay it, and no password is ever sent in clear
    // or as md5). An explicit channel_binding wins; verify-ca/-full check the certificate.
    let binding = channel_binding.unwrap_or(
        if ssl == SslMode::Require && config.get_password().is_some() {
            ChannelBinding::Require
        } else {
            ChannelBinding::Prefer
        },
    );
    config.channel_binding(binding);
    (ssl, implied_require)
}

/// Every host is a Unix socket or a loopback name or address (and so is every `hostaddr`).
fn local_only(config: &Config) -> bool {
    let loopback_name = |h: &str| {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        h.eq_ignore_ascii_case("localhost")
            || h.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    };
    let hosts = config.get_hosts();
    // No host: libpq's default, the local Unix socket.
    hosts.iter().all(|h| match h {
        Host::Tcp(name) => loopback_name(name),
        Host::Unix(_) => true,
    }) && config.get_hostaddrs().iter().all(|a| a.is_loopback())
}

/// libpq's `key=value key2='quoted value'` connection string, as pairs.
fn key_values(raw: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') {
            bail!(
                "DATABASE_URL is neither a postgresql:// URL nor key=value pairs (near {:?})",
                redact(&key)
            );
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("DATABASE_URL has an unterminated quoted value for {key:?}"),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                    value.extend(chars.next());
                    continue;
                }
                value.push(c);
                chars.next();
            }
        }
        out.push((key, value));
    }
}

fn percent_decode(s: &str) -> String {
    // Byte-wise, so a `%` before a multibyte character (or a sign: `%+1`) is kept as it is.
    fn hex(b: Option<&u8>) -> Option<u8> {
        b.and_then(|b| char::from(*b).to_digit(16))
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(high), Some(low)) = (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                out.push(high << 4 | low);
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
    fn a_percent_before_a_multibyte_character_or_a_sign_is_kept_not_a_panic() {
        assert_eq!(percent_decode("%a\u{e9}t\u{e9}"), "%a\u{e9}t\u{e9}");
        assert_eq!(percent_decode("%+1%2F%"), "%+1/%");
        assert_eq!(percent_decode("%e2%82%AC"), "\u{20ac}");
        let t = Target::parse(&Secret::new(
            "postgresql://u:pw@h/x?application_name=%a\u{e9}",
        ))
        .unwrap();
        assert_eq!(t.shown, "h:5432");
    }

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
    fn an_unset_sslmode_with_a_password_to_another_machine_means_require() {
        let t = |url: &str| Target::parse(&Secret::new(url)).unwrap();
        for remote in [
            "postgresql://u:pw@db.example.com/x",
            "postgresql://u:pw@10.0.0.5:5432/x",
            "postgresql://u:pw@localhost,db.example.com/x",
            "host=db.example.com user=u password=pw",
            "postgresql://u:pw@localhost/x?hostaddr=10.0.0.5",
        ] {
            let target = t(remote);
            assert_eq!(target.ssl, SslMode::Require, "{remote}");
            assert_eq!(
                target.config.get_channel_binding(),
                ChannelBinding::Require,
                "{remote}"
            );
            assert!(
                target
                    .protection()
                    .contains("sslmode unset or prefer: require"),
                "{remote}"
            );
        }
        for stays in [
            "postgresql://u:pw@localhost/x",
            "postgresql://u:pw@127.0.0.1:5432/x",
            "postgresql://u:pw@[::1]:5432/x",
            "postgresql://u:pw@%2Fvar%2Frun%2Fpostgresql/x",
            "postgresql://u@db.example.com/x",
        ] {
            assert_eq!(t(stays).ssl, SslMode::Prefer, "{stays}");
        }
        for (written, mode) in [
            (
                "postgresql://u:pw@db.example.com/x?sslmode=disable",
                SslMode::Disable,
            ),
            (
                "postgresql://u:pw@db.example.com/x?sslmode=prefer",
                SslMode::Require,
            ),
            (
                "postgresql://u:pw@db.example.com/x?sslmode=allow",
                SslMode::Require,
            ),
            (
                "postgresql://u:pw@localhost/x?sslmode=prefer",
                SslMode::Prefer,
            ),
        ] {
            assert_eq!(t(written).ssl, mode, "{written}");
        }
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

    #[test]
    fn key_value_strings_are_read_like_urls() {
        let t = Target::parse(&Secret::new(
            "host=db.example.com port=6543 dbname=app user=u password='p w\\'x' sslmode=require",
        ))
        .unwrap();
        assert_eq!(t.ssl, SslMode::Require, "never quietly prefer");
        assert_eq!(t.shown, "db.example.com:6543");
        assert_eq!(t.config.get_password(), Some(&b"p w'x"[..]));
        assert_eq!(t.config.get_channel_binding(), ChannelBinding::Require);
        let e = Target::parse(&Secret::new("host=h sslmode=sometimes"))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("sslmode=\"sometimes\""), "{e}");
        assert!(Target::parse(&Secret::new("host=h dbname='open")).is_err());
    }

    #[test]
    fn channel_binding_is_required_when_tls_is_unverified_and_a_password_is_sent() {
        let binding = |url: &str| {
            Target::parse(&Secret::new(url))
                .unwrap()
                .config
                .get_channel_binding()
        };
        assert_eq!(
            binding("postgresql://u:pw@h/x?sslmode=require"),
            ChannelBinding::Require
        );
        assert_eq!(
            binding("postgresql://u@h/x?sslmode=require"),
            ChannelBinding::Prefer,
            "no password to protect"
        );
        assert_eq!(
            binding("postgresql://u:pw@h/x?sslmode=require&channel_binding=prefer"),
            ChannelBinding::Prefer
        );
        assert_eq!(
            binding("postgresql://u:pw@h/x?sslmode=verify-full"),
            ChannelBinding::Prefer
        );
        assert_eq!(
            binding("postgresql://u:pw@h/x?sslmode=verify-full&channel_binding=require"),
            ChannelBinding::Require
        );
        assert_eq!(
            binding("postgresql://u:pw@h/x?sslmode=disable&channel_binding=disable"),
            ChannelBinding::Disable
        );
        let t = Target::parse(&Secret::new("postgresql://u:pw@h/x?sslmode=require")).unwrap();
        assert_eq!(
            t.protection(),
            "TLS, certificate not verified, channel binding required"
        );
    }
}
