//! One function per subcommand.

use std::path::PathBuf;

use clap::Args;
use g2p_encryption::{SignOptions, SignPayload, b64};

use crate::cli::Used;
use crate::failure::Failure;
use crate::io::{read_input, write_output};
use g2p_config::Provider;

/// Input and output files.
#[derive(Debug, Args)]
pub struct InOut {
    /// Read from this file instead of standard input.
    #[arg(long = "in", value_name = "PATH")]
    pub input: Option<PathBuf>,
    /// Write to this file instead of standard output (written whole, or not at all).
    #[arg(long = "out", value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// `sign` options.
#[derive(Debug, Args)]
pub struct SignArgs {
    #[command(flatten)]
    pub io: InOut,
    /// Sign the input as UTF-8 text instead of a JSON document.
    #[arg(long)]
    pub text: bool,
    /// Leave the payload out of the token (`header..signature`).
    #[arg(long)]
    pub detached: bool,
    /// Put the signing certificate in the header (`x5c`).
    #[arg(long)]
    pub include_certificate: bool,
    /// Put the certificate's SHA-256 in the header (`x5t#S256`).
    #[arg(long)]
    pub include_cert_hash: bool,
    /// Put this URL in the header (`x5u`).
    #[arg(long, value_name = "URL")]
    pub certificate_url: Option<String>,
}

/// `verify` options.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub io: InOut,
    /// The payload of a detached token.
    #[arg(long, value_name = "PATH")]
    pub payload: Option<PathBuf>,
}

/// `token` options.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Also print the access token itself.
    #[arg(long)]
    pub show: bool,
}

/// `encrypt`: raw bytes in, base64url ciphertext and a newline out.
pub async fn encrypt(used: &Used<'_>, io: &InOut) -> Result<(), Failure> {
    let plaintext = read_input(io.input.as_deref())?;
    let provider = used.provider.as_dyn();
    let result = provider.encrypt(&plaintext).await.map_err(Failure::from);
    let key = result
        .as_ref()
        .ok()
        .and_then(|ct| provider.ciphertext_key(ct));
    let done = usize::from(result.is_ok());
    let ciphertext = used.record("encrypt", key.into_iter().collect(), (1, done), result)?;
    let mut out = b64::encode_b64u(&ciphertext).into_bytes();
    out.push(b'\n');
    write_output(io.output.as_deref(), &out)
}

/// `decrypt`: base64url ciphertext in (whitespace around it ignored), raw plaintext out.
pub async fn decrypt(used: &Used<'_>, io: &InOut) -> Result<(), Failure> {
    let input = read_input(io.input.as_deref())?;
    let text = std::str::from_utf8(&input)
        .map_err(|_| Failure::usage("input is not base64url text (not UTF-8)"))?
        .trim();
    if text.is_empty() {
        return Err(Failure::usage(
            "input is empty: expected a base64url ciphertext",
        ));
    }
    let ciphertext = b64::decode_lenient(text)
        .map_err(|e| Failure::usage(format!("input is not base64url: {e}")))?;
    let provider = used.provider.as_dyn();
    let key = provider.ciphertext_key(&ciphertext);
    let result = provider.decrypt(&ciphertext).await.map_err(Failure::from);
    let done = usize::from(result.is_ok());
    let plaintext = used.record("decrypt", key.into_iter().collect(), (1, done), result)?;
    write_output(io.output.as_deref(), &plaintext)
}

/// `sign`: a JSON document (or text with `--text`) in, compact JWS and a newline out.
pub async fn sign(used: &Used<'_>, args: &SignArgs) -> Result<(), Failure> {
    let input = read_input(args.io.input.as_deref())?;
    let payload = if args.text {
        SignPayload::Text(
            String::from_utf8(input).map_err(|_| Failure::usage("input is not UTF-8 text"))?,
        )
    } else {
        // Checked to be JSON, then signed exactly as given, so that `verify --payload` with
        // the same file verifies a detached signature.
        serde_json::from_slice::<serde::de::IgnoredAny>(&input).map_err(|e| {
            Failure::usage(format!(
                "input is not a JSON document ({e}); use --text to sign text"
            ))
        })?;
        SignPayload::JsonBytes(input)
    };
    let options = SignOptions {
        include_payload: !args.detached,
        include_certificate: args.include_certificate,
        include_cert_hash: args.include_cert_hash,
        certificate_url: args.certificate_url.clone(),
    };
    let result = used
        .provider
        .as_dyn()
        .jwt_sign(&payload, &options)
        .await
        .map_err(Failure::from);
    let key = result
        .as_ref()
        .ok()
        .and_then(|token| g2p_encryption::UnverifiedJws::parse(token).ok())
        .and_then(|token| token.header().kid.clone());
    let done = usize::from(result.is_ok());
    let token = used.record("sign", key.into_iter().collect(), (1, done), result)?;
    write_output(args.io.output.as_deref(), format!("{token}\n").as_bytes())
}

/// `verify`: compact JWS in; the verified payload and a newline out.
pub async fn verify(used: &Used<'_>, args: &VerifyArgs) -> Result<(), Failure> {
    let input = read_input(args.io.input.as_deref())?;
    let token = std::str::from_utf8(&input)
        .map_err(|_| Failure::usage("input is not a compact JWS (not UTF-8)"))?
        .trim();
    let payload = match &args.payload {
        Some(path) => Some(read_input(Some(path))?),
        None => None,
    };
    let result = used
        .provider
        .as_dyn()
        .jwt_verify(token, payload.as_deref())
        .await
        .map_err(Failure::from);
    let key = result
        .as_ref()
        .ok()
        .and_then(|v| v.key_id().map(String::from));
    let done = usize::from(result.is_ok());
    let verified = used.record("verify", key.into_iter().collect(), (1, done), result)?;
    let mut out = verified.into_payload();
    out.push(b'\n');
    write_output(args.io.output.as_deref(), &out)
}

/// `jwks`: the JWK set as JSON.
pub async fn jwks(provider: &Provider) -> Result<(), Failure> {
    let set = provider.as_dyn().jwks().await?;
    let mut out = serde_json::to_vec_pretty(&set)
        .map_err(|e| Failure::usage(format!("cannot serialize the JWK set: {e}")))?;
    out.push(b'\n');
    write_output(None, &out)
}

/// `token`: fetches a token and shows its expiry and subject.
pub async fn token(provider: &Provider, args: &TokenArgs) -> Result<(), Failure> {
    let Provider::Keymanager(km) = provider else {
        return Err(Failure::usage(
            "token: the selected provider is the embedded key manager, which needs no token",
        ));
    };
    let token = km
        .client()
        .tokens()
        .fetch()
        .await
        .map_err(g2p_encryption::Error::from)?;
    let expires = token
        .expires_at()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| token.expires_at().to_string());
    let remaining = (token.expires_at() - time::OffsetDateTime::now_utc()).whole_seconds();
    let mut out = format!(
        "subject: {}\nexpires_at: {expires}\nexpires_in: {remaining} s\n",
        token.subject().unwrap_or("(not stated)")
    );
    if let Some(scope) = token.scope() {
        out.push_str(&format!("scope: {scope}\n"));
    }
    if args.show {
        out.push_str(&format!("access_token: {}\n", token.secret()));
    }
    write_output(None, out.as_bytes())
}
