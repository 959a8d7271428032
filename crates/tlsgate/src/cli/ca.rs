//! `tlsgate ca`: create the interception CA, issue leaves from it offline, and show it.
//!
//! The CA key is read and written only through `tlsgate-ca`, which refuses keys readable by
//! group or others and never overwrites files; nothing here prints or logs key material.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use tlsgate_ca::{Algorithm, CaParams, CertAuthority, LeafRequest, Minter};

/// Subject common name of a new CA: what users see in their trust store.
pub const DEFAULT_CA_NAME: &str = "tlsgate interception CA";
/// Validity of a new CA: 10 years. A private root is not bound by the CA/Browser Forum or
/// Apple limits (those apply to leaves), and every rotation means re-distributing it to every
/// client's trust store. Leaves stay short-lived (7 days at runtime, see `ca issue --days`).
pub const DEFAULT_CA_DAYS: u32 = 3650;
/// Validity of a leaf from `ca issue`: long enough for a hand-installed certificate.
pub const DEFAULT_ISSUE_DAYS: u32 = 90;
/// Apple platforms reject TLS server certificates valid for more than 825 days, whatever the CA.
pub const MAX_ISSUE_DAYS: u32 = 825;

const CA_EXAMPLES: &str = "\
EXAMPLES:
  Create the CA in the default directory ($XDG_DATA_HOME/tlsgate/ca or ~/.local/share/tlsgate/ca):
    tlsgate ca init
  Create an RSA CA elsewhere, for clients that only accept RSA roots:
    tlsgate ca init --dir /etc/tlsgate/ca --algorithm rsa-3072 --name \"Example Corp egress CA\"
  Show what clients must trust (fingerprints, validity):
    tlsgate ca show
  Issue a certificate offline, e.g. for a static TLS secret (writes ./api.example.com.{pem,key}):
    tlsgate ca issue api.example.com www.example.com --ip 10.0.0.7 --out .";

/// The `ca` subcommands.
#[derive(Debug, Subcommand)]
#[command(after_long_help = CA_EXAMPLES)]
pub enum CaCommand {
    /// Create a new CA (certificate + key) for TLS interception. Never overwrites files.
    #[command(after_long_help = INIT_HELP)]
    Init(InitArgs),
    /// Issue a server certificate for NAMEs from the CA, with its own new key.
    #[command(after_long_help = ISSUE_HELP)]
    Issue(IssueArgs),
    /// Show the CA certificate: subject, serial, validity, fingerprints, key algorithm.
    Show(DirArg),
}

const INIT_HELP: &str = "\
Writes ca.pem (certificate, 0644), ca.der (same, DER, 0644) and ca.key (private key, created
0600) into --dir, creating it with mode 0700 if missing. Refuses if any of them exists: a CA
already trusted by clients is never replaced by accident.

The CA is CA:TRUE with pathlen 0 (it signs leaves only) and keyUsage keyCertSign, cRLSign.

EXAMPLES:
  tlsgate ca init
  tlsgate ca init --dir ./ca --algorithm rsa-2048 --days 730";

const ISSUE_HELP: &str = "\
Each NAME becomes a DNS subjectAltName (or an IP one if it is an IP literal); --ip adds IP
subjectAltNames. The first name is the subject CN and names the files written into --out:
<name>.pem (certificate then CA certificate) and <name>.key (its own new private key, 0600;
never the CA key). Refuses to overwrite either file.

EXAMPLES:
  tlsgate ca issue api.example.com
  tlsgate ca issue '*.internal.example' internal.example --ip 10.1.2.3 --out ./certs --days 30";

/// `--dir`, shared by the subcommands.
#[derive(Debug, Args)]
pub struct DirArg {
    /// The CA directory. Default: $XDG_DATA_HOME/tlsgate/ca, else ~/.local/share/tlsgate/ca.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Key algorithm of the CA.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::EcdsaP256)]
    algorithm: AlgorithmArg,
    /// Subject common name, shown in trust stores.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_CA_NAME)]
    name: String,
    /// Validity in days (the start is back-dated one hour for clients with slow clocks).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CA_DAYS)]
    days: u32,
}

#[derive(Debug, Args)]
pub struct IssueArgs {
    /// DNS names (or IP literals) for the certificate; the first is the CN and the file name.
    #[arg(value_name = "NAME", required_unless_present = "ips")]
    names: Vec<String>,
    /// IP addresses for the certificate (repeatable).
    #[arg(long = "ip", value_name = "IP")]
    ips: Vec<IpAddr>,
    #[command(flatten)]
    dir: DirArg,
    /// Directory for <name>.pem and <name>.key (created 0700 if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    out: PathBuf,
    /// Validity in days, at most 825 (Apple's limit for TLS server certificates); never past
    /// the CA's own expiry.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_ISSUE_DAYS)]
    days: u32,
}

/// `--algorithm` values (the CLI spelling of [`Algorithm`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum AlgorithmArg {
    /// ECDSA P-256 (default): small and fast, accepted by all current clients.
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    /// RSA 2048, for clients or appliances that only accept RSA roots.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA 3072.
    #[value(name = "rsa-3072")]
    Rsa3072,
}

impl From<AlgorithmArg> for Algorithm {
    fn from(arg: AlgorithmArg) -> Self {
        match arg {
            AlgorithmArg::EcdsaP256 => Algorithm::EcdsaP256,
            AlgorithmArg::Rsa2048 => Algorithm::Rsa2048,
            AlgorithmArg::Rsa3072 => Algorithm::Rsa3072,
        }
    }
}

/// Runs one `ca` subcommand.
pub fn run(command: CaCommand) -> ExitCode {
    let result = match command {
        CaCommand::Init(args) => init(&args),
        CaCommand::Issue(args) => issue(&args),
        CaCommand::Show(args) => show(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => super::fail(&err),
    }
}

fn ca_dir(arg: &DirArg) -> Result<PathBuf> {
    match &arg.dir {
        Some(dir) => Ok(dir.clone()),
        None => crate::paths::default_ca_dir()
            .map_err(anyhow::Error::msg)
            .context("choosing the CA directory (pass --dir)"),
    }
}

fn load(dir: &Path) -> Result<CertAuthority> {
    CertAuthority::load_dir(dir).with_context(|| format!("loading the CA from {}", dir.display()))
}

fn init(args: &InitArgs) -> Result<()> {
    let dir = ca_dir(&args.dir)?;
    let params = CaParams {
        common_name: args.name.clone(),
        algorithm: args.algorithm.into(),
        days: args.days,
    };
    let ca = CertAuthority::generate(&params)
        .with_context(|| format!("generating a {} CA", params.algorithm))?;
    let files = ca
        .save(&dir)
        .with_context(|| format!("saving the CA in {}", dir.display()))?;
    let summary = ca.summary();
    let pem = files.cert_pem.display();
    println!("Created the CA {:?} in {}", summary.subject, dir.display());
    println!("  certificate (PEM): {pem}");
    println!("  certificate (DER): {}", files.cert_der.display());
    println!(
        "  private key:       {} (mode 0600; keep it on this host)",
        files.key.display()
    );
    println!("  key algorithm:     {}", summary.algorithm);
    println!(
        "  valid until:       {}",
        humantime::format_rfc3339_seconds(summary.not_after)
    );
    println!("  SHA-256:           {}", summary.sha256_fingerprint);
    println!();
    println!("Make clients trust it (only on machines whose traffic you intercept):");
    println!(
        "  Debian/Ubuntu:  sudo cp {pem} /usr/local/share/ca-certificates/tlsgate.crt && sudo update-ca-certificates"
    );
    println!(
        "  RHEL/Fedora:    sudo cp {pem} /etc/pki/ca-trust/source/anchors/tlsgate.pem && sudo update-ca-trust"
    );
    println!("  curl:           curl --cacert {pem} https://example.com/");
    println!(
        "  Firefox/Chrome (NSS): certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n tlsgate -i {pem}"
    );
    println!("Anyone holding ca.key can impersonate any site to clients that trust this CA.");
    Ok(())
}

fn issue(args: &IssueArgs) -> Result<()> {
    if args.days == 0 || args.days > MAX_ISSUE_DAYS {
        bail!(
            "--days must be between 1 and {MAX_ISSUE_DAYS} (Apple platforms reject longer-lived server certificates)"
        );
    }
    let request = issue_request(&args.names, &args.ips);
    let stem = file_stem(args.names.first().map(String::as_str), &args.ips);
    let dir = ca_dir(&args.dir)?;
    let ca = Arc::new(load(&dir)?);
    let lifetime = Duration::from_secs(u64::from(args.days) * 86_400);
    // A new Minter generates a new leaf key: this certificate shares no key with anything.
    let minter = Minter::new(Arc::clone(&ca), lifetime).context("creating a leaf key")?;
    let leaf = minter.mint(&request).context("issuing the certificate")?;
    let files = minter
        .save_leaf(&leaf, &args.out, &stem)
        .with_context(|| format!("writing the certificate into {}", args.out.display()))?;
    println!("Issued a certificate signed by {}", ca.summary().subject);
    println!("  names:       {}", describe(&request));
    println!(
        "  valid until: {}",
        humantime::format_rfc3339_seconds(leaf.not_after)
    );
    if leaf.not_after < SystemTime::now() + lifetime - Duration::from_secs(60) {
        println!("               (shortened to the CA's own expiry)");
    }
    println!(
        "  chain:       {} (certificate, then the CA)",
        files.chain.display()
    );
    println!("  key:         {} (mode 0600)", files.key.display());
    Ok(())
}

/// NAMEs that are IP literals become IP SANs, like the runtime's `LeafRequest::for_name`.
fn issue_request(names: &[String], ips: &[IpAddr]) -> LeafRequest {
    let mut request = LeafRequest::default();
    for name in names {
        let single = LeafRequest::for_name(name);
        request.dns_names.extend(single.dns_names);
        request.ips.extend(single.ips);
        if request.common_name.is_none() {
            request.common_name = single.common_name;
        }
    }
    request.ips.extend_from_slice(ips);
    if request.common_name.is_none() && names.is_empty() {
        request.common_name = ips.first().map(IpAddr::to_string);
    }
    request
}

/// File name for the first name: `*.example.com` becomes `wildcard.example.com`.
fn file_stem(first_name: Option<&str>, ips: &[IpAddr]) -> String {
    let name = first_name
        .map(str::to_owned)
        .or_else(|| ips.first().map(IpAddr::to_string))
        .unwrap_or_default();
    let name = name.trim_start_matches('[').trim_end_matches(']');
    match name.strip_prefix("*.") {
        Some(rest) => format!("wildcard.{rest}"),
        None => name.to_owned(),
    }
}

fn describe(request: &LeafRequest) -> String {
    let dns = request.dns_names.iter().map(|n| format!("DNS:{n}"));
    let ips = request.ips.iter().map(|ip| format!("IP:{ip}"));
    dns.chain(ips).collect::<Vec<_>>().join(", ")
}

fn show(args: &DirArg) -> Result<()> {
    let dir = ca_dir(args)?;
    let ca = load(&dir)?;
    let s = ca.summary();
    let now = SystemTime::now();
    let state = match (now < s.not_before, s.not_after.duration_since(now)) {
        (true, _) => "not yet valid".to_owned(),
        (false, Ok(left)) => format!("valid, {} days left", left.as_secs() / 86_400),
        (false, Err(_)) => "EXPIRED".to_owned(),
    };
    println!("CA directory:  {}", dir.display());
    println!("subject:       {}", s.subject);
    println!("issuer:        {}", s.issuer);
    println!("serial:        {}", s.serial_hex);
    println!(
        "not before:    {}",
        humantime::format_rfc3339_seconds(s.not_before)
    );
    println!(
        "not after:     {} ({state})",
        humantime::format_rfc3339_seconds(s.not_after)
    );
    println!("key algorithm: {}", s.algorithm);
    println!("SHA-256:       {}", s.sha256_fingerprint);
    println!("SHA-1:         {}", s.sha1_fingerprint);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_literal_names_become_ip_sans_and_the_first_name_is_the_cn() {
        let names = vec!["api.example.com".to_owned(), "10.0.0.1".to_owned()];
        let req = issue_request(&names, &["::1".parse().unwrap()]);
        assert_eq!(req.common_name.as_deref(), Some("api.example.com"));
        assert_eq!(req.dns_names, vec!["api.example.com".to_owned()]);
        assert_eq!(
            req.ips,
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn ip_only_requests_use_the_first_ip_as_cn_and_file_name() {
        let ips = ["192.0.2.1".parse().unwrap()];
        assert_eq!(
            issue_request(&[], &ips).common_name.as_deref(),
            Some("192.0.2.1")
        );
        assert_eq!(file_stem(None, &ips), "192.0.2.1");
    }

    #[test]
    fn wildcard_names_get_a_plain_file_name() {
        assert_eq!(
            file_stem(Some("*.example.com"), &[]),
            "wildcard.example.com"
        );
        assert_eq!(file_stem(Some("[::1]"), &[]), "::1");
    }
}
