//! Authentication: a static bearer token or JWTs, checked once per connection before any data
//! flows. A verified credential becomes the connection's claims, which rules and queries read
//! as `$auth.*` (`$auth.sub`, `$auth.role`, ...). A JWT claim whose value is null is left out,
//! as are nulls inside claims: a null claim is one the token lacks.
//!
//! Where the credential comes from:
//! - HTTP (`/v1/sync` upgrade, `/v1/query`): `Authorization: Bearer <token>`, or
//!   `?token=<token>` for browsers, which cannot set headers on a WebSocket. A failure is
//!   answered `401` with a JSON body before the WebSocket upgrade.
//! - raw TCP / Unix sessions: the token field of the client's HELLO; a failure ends the
//!   session with `AUTH_FAILED` before the relay subscribes or sends anything.
//!
//! A client address that presented too many wrong credentials lately is refused before its
//! credential is looked at (`429` / `RATE_LIMITED`): see `blazedb_net::auth_failures`.
//!
//! Credentials named by a file (`--token-file`, `--jwt-secret-file`, `--jwt-public-key`) may be
//! several — the old and the new during a rotation — and the file is read again when it
//! changes ([`Authenticator::reload_credentials`]), so none of them needs a restart to rotate.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use blazedb::query::Params;
use blazedb::Value;
use blazedb_net::file_stamp::{file_stamp, FileStamp};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{AuthConfig, RelayConfig, Secret};
use crate::error::RelayError;
use crate::limits::{AUTH_SECRET_BYTES_MIN, JWT_LEEWAY_S, SECRET_FILE_BYTES_MAX};

/// The verified identity of a connection: a JWT's claims, `{"sub": "token"}` for the static
/// token, nothing when the relay runs without authentication.
pub type Claims = BTreeMap<String, Value>;

/// The parameters rules and queries are evaluated with: `$auth` is the claims.
pub fn params(claims: &Claims) -> Params {
    let mut p = Params::new();
    p.insert("auth".to_owned(), Value::Map(claims.clone()));
    p
}

/// Why a credential was refused. The message is what the client shows its user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No credential was presented.
    #[error(
        "missing credentials: this relay requires a token (send `Authorization: Bearer <token>`, \
         `?token=<token>` from a browser, or the token in HELLO)"
    )]
    Missing,
    /// An `Authorization` header that is not `Bearer <token>` (e.g. `Basic ...`).
    #[error("the Authorization header must be `Bearer <token>`: this relay takes no other scheme")]
    NotBearer,
    /// `Authorization: Bearer` (or `?token=`) with nothing after it: usually a variable that
    /// was not set where the token was meant to be pasted in.
    #[error(
        "the credential is empty (`Bearer` or `token=` with no token after it; is the variable \
         meant to hold the token set?): send `Authorization: Bearer <token>` or `?token=<token>`"
    )]
    EmptyCredential,
    /// The static token matches none the relay accepts.
    #[error("invalid token: it is not a token this relay accepts")]
    InvalidToken,
    /// The JWT expired.
    #[error("the token expired: get a new one")]
    Expired,
    /// The JWT's signature does not verify with the relay's key.
    #[error("the token's signature is invalid: it was not issued for this relay")]
    BadSignature,
    /// A JWT that is not one this relay can read: malformed, or signed with an algorithm it
    /// does not accept for its key.
    #[error("invalid token: {0}")]
    Jwt(String),
    /// A JWT whose signature verifies but whose claims are refused: issued for another
    /// audience or by another issuer, a required claim missing or misshapen, not valid yet
    /// (`nbf`), issued in the future (`iat`).
    #[error("invalid token: {0}")]
    Claims(String),
}

impl AuthError {
    /// Whether the refusal was of a credential the client presented (a wrong token, a JWT
    /// that does not verify or expired), which counts towards its address's failure limit
    /// (`blazedb_net::auth_failures`) and in `auth_failures_total`. No credential, an empty
    /// one or another scheme guesses nothing: a request without one is how an HTTP client
    /// learns that a server wants one.
    pub fn is_guess(&self) -> bool {
        self.failure_kind().is_some()
    }

    /// How `auth_failures_total` counts it; `None` for no credential, an empty one or
    /// another scheme (see [`AuthError::is_guess`]).
    pub fn failure_kind(&self) -> Option<AuthFailureKind> {
        match self {
            AuthError::Missing | AuthError::NotBearer | AuthError::EmptyCredential => None,
            AuthError::InvalidToken | AuthError::BadSignature | AuthError::Jwt(_) => {
                Some(AuthFailureKind::Invalid)
            }
            AuthError::Expired => Some(AuthFailureKind::Expired),
            AuthError::Claims(_) => Some(AuthFailureKind::Claims),
        }
    }
}

/// What was wrong with a refused credential: the `kind` label of `auth_failures_total`, a
/// fixed set.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AuthFailureKind {
    /// Not the relay's token, a JWT whose signature does not verify with the relay's key,
    /// or not a JWT it can read (malformed, an algorithm it does not accept).
    Invalid,
    /// A JWT past its `exp`: at connect, or during a session (which then ends).
    Expired,
    /// A JWT that verifies but whose claims are refused: audience, issuer, a required claim
    /// missing or misshapen, `nbf` in the future, `iat` in the future.
    Claims,
    /// A valid credential presenting a node id that is bound to another identity here (the
    /// first that connected with it).
    NodeOwner,
    /// A TLS client certificate refused: at the handshake (none where one is required, not
    /// from the client CA, expired, revoked, or the revocation lists unreadable), or during
    /// a session whose certificate the revocation lists, read again, now revoke.
    ClientCertificate,
}

impl AuthFailureKind {
    /// Every kind, for metrics that start at 0.
    pub const ALL: [AuthFailureKind; 5] = [
        AuthFailureKind::Invalid,
        AuthFailureKind::Expired,
        AuthFailureKind::Claims,
        AuthFailureKind::NodeOwner,
        AuthFailureKind::ClientCertificate,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailureKind::Invalid => "invalid",
            AuthFailureKind::Expired => "expired",
            AuthFailureKind::Claims => "claims",
            AuthFailureKind::NodeOwner => "node_owner",
            AuthFailureKind::ClientCertificate => "client_certificate",
        }
    }
}

/// Checks credentials. Built at startup from the configuration; a credential file (tokens,
/// HMAC secrets, public keys) is read again when it changes
/// ([`Authenticator::reload_credentials`]).
pub struct Authenticator {
    kind: Kind,
}

enum Kind {
    Anonymous,
    Token(Box<Tokens>),
    Jwt(Box<Jwt>),
}

/// Static token checking: the tokens a client may present.
struct Tokens {
    /// The file the tokens come from, read again when it changes; `None` for a token given
    /// as such (`--token`, `BLAZEDB_RELAY_TOKEN`).
    file: Option<CredentialFile>,
    /// The tokens now: the one given, or each of the file's (during a rotation, the old and
    /// the new). Never empty.
    accepted: std::sync::RwLock<Vec<Secret>>,
}

/// JWT checking: the keys a token may be signed with, and the checks of its claims.
struct Jwt {
    /// The checks of every token (`exp`, `nbf`, the required claims, audience, issuer);
    /// each key's own copy sets the algorithms of its family.
    template: Validation,
    /// The file the HMAC secrets or public keys come from, read again when it changes;
    /// `None` for a secret given as such (`--jwt-secret`, `BLAZEDB_JWT_SECRET`).
    file: Option<CredentialFile>,
    /// The keys now: one for a secret given as such; each of the file's secrets or public
    /// keys (during a rotation, the old and the new). Never empty.
    keys: std::sync::RwLock<Vec<VerifyingKey>>,
}

/// A file the relay's credentials come from, read again when it changes.
struct CredentialFile {
    path: PathBuf,
    what: CredentialFileKind,
    /// The file when last read (length, modification time, inode).
    stamp: std::sync::Mutex<Option<FileStamp>>,
}

/// What a credential file holds: it names the file in messages and the events that log its
/// readings ([`Authenticator::reload_credentials`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialFileKind {
    /// Static bearer tokens, one a line (`--token-file`).
    Tokens,
    /// JWT HMAC secrets, one a line (`--jwt-secret-file`).
    JwtSecrets,
    /// JWT public keys, one PEM block each (`--jwt-public-key`).
    JwtPublicKeys,
}

/// A key and the validation of tokens signed with it (its family's algorithms).
struct VerifyingKey {
    key: DecodingKey,
    validation: Validation,
    name: &'static str,
}

impl CredentialFileKind {
    /// The event logged when the changed file was read and its credentials are in force:
    /// `tokens_reloaded`, `jwt_secrets_reloaded`, `jwt_keys_reloaded`.
    pub fn reloaded_event(self) -> &'static str {
        match self {
            CredentialFileKind::Tokens => "tokens_reloaded",
            CredentialFileKind::JwtSecrets => "jwt_secrets_reloaded",
            CredentialFileKind::JwtPublicKeys => "jwt_keys_reloaded",
        }
    }

    /// The event logged when the changed file cannot be used (and the credentials read
    /// before stay): `tokens_unusable`, `jwt_secrets_unusable`, `jwt_keys_unusable`.
    pub fn unusable_event(self) -> &'static str {
        match self {
            CredentialFileKind::Tokens => "tokens_unusable",
            CredentialFileKind::JwtSecrets => "jwt_secrets_unusable",
            CredentialFileKind::JwtPublicKeys => "jwt_keys_unusable",
        }
    }

    /// What the file holds, in the plural: the field of the reloaded event that counts them
    /// (`tokens`, `secrets`, `keys`), and the word of messages.
    pub fn plural(self) -> &'static str {
        match self {
            CredentialFileKind::Tokens => "tokens",
            CredentialFileKind::JwtSecrets => "secrets",
            CredentialFileKind::JwtPublicKeys => "keys",
        }
    }

    /// The file, as messages name it.
    fn file_name(self) -> &'static str {
        match self {
            CredentialFileKind::Tokens => "token file",
            CredentialFileKind::JwtSecrets => "JWT secret file",
            CredentialFileKind::JwtPublicKeys => "JWT public key",
        }
    }
}

impl CredentialFile {
    fn new(path: &Path, what: CredentialFileKind) -> CredentialFile {
        CredentialFile {
            path: path.to_owned(),
            what,
            stamp: std::sync::Mutex::new(file_stamp(path)),
        }
    }

    /// Whether the file changed since it was last looked at; the change is taken note of,
    /// so that a file that cannot be used is tried again at its next change, not at every
    /// look.
    fn changed(&self) -> bool {
        let now = file_stamp(&self.path);
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *stamp == now {
            return false;
        }
        *stamp = now;
        true
    }
}

impl fmt::Debug for Authenticator {
    // Never print the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("kind", &self.kind_name())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// From the relay's configuration: reads and checks the public key file, if any.
    pub fn from_config(config: &RelayConfig) -> Result<Authenticator, RelayError> {
        let template = || {
            let mut v = Validation::new(Algorithm::HS256);
            v.leeway = JWT_LEEWAY_S;
            v.validate_exp = true;
            v.validate_nbf = true;
            // A configured audience or issuer is required, not only checked when present:
            // the library skips the comparison for a token without the claim, which would let
            // tokens issued for any other service of the same key through.
            let mut required = vec!["exp"];
            match &config.jwt_audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    required.push("aud");
                }
                // Without a configured audience, a token's `aud` cannot be checked; the
                // library would refuse every token that has one.
                None => v.validate_aud = false,
            }
            if let Some(iss) = &config.jwt_issuer {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            v.set_required_spec_claims(&required);
            v
        };
        let is_jwt = matches!(
            config.auth,
            AuthConfig::JwtSecret(_) | AuthConfig::JwtSecretFile(_) | AuthConfig::JwtPublicKey(_)
        );
        if !is_jwt && (config.jwt_audience.is_some() || config.jwt_issuer.is_some()) {
            return Err(RelayError::Config(
                "--jwt-audience and --jwt-issuer check JWTs: give --jwt-secret or \
                 --jwt-public-key as well (with a static token or no authentication they \
                 would check nothing)"
                    .into(),
            ));
        }
        let kind = match &config.auth {
            AuthConfig::None => Kind::Anonymous,
            AuthConfig::Token(t) => {
                check_secret(t.expose(), CredentialFileKind::Tokens, None)
                    .map_err(RelayError::Auth)?;
                Kind::Token(Box::new(Tokens {
                    file: None,
                    accepted: std::sync::RwLock::new(vec![t.clone()]),
                }))
            }
            AuthConfig::TokenFile(path) => {
                let file = CredentialFile::new(path, CredentialFileKind::Tokens);
                let tokens = secret_lines(&file).map_err(RelayError::Auth)?;
                Kind::Token(Box::new(Tokens {
                    file: Some(file),
                    accepted: std::sync::RwLock::new(tokens),
                }))
            }
            AuthConfig::JwtSecret(s) => {
                check_secret(s.expose(), CredentialFileKind::JwtSecrets, None)
                    .map_err(RelayError::Auth)?;
                let template = template();
                let key = hmac_key(s, &template);
                Kind::Jwt(Box::new(Jwt {
                    template,
                    file: None,
                    keys: std::sync::RwLock::new(vec![key]),
                }))
            }
            AuthConfig::JwtSecretFile(path) => {
                let template = template();
                let file = CredentialFile::new(path, CredentialFileKind::JwtSecrets);
                let keys = jwt_keys(&file, &template).map_err(RelayError::Auth)?;
                Kind::Jwt(Box::new(Jwt {
                    template,
                    file: Some(file),
                    keys: std::sync::RwLock::new(keys),
                }))
            }
            AuthConfig::JwtPublicKey(path) => {
                let template = template();
                let file = CredentialFile::new(path, CredentialFileKind::JwtPublicKeys);
                let keys = jwt_keys(&file, &template).map_err(RelayError::Auth)?;
                Kind::Jwt(Box::new(Jwt {
                    template,
                    file: Some(file),
                    keys: std::sync::RwLock::new(keys),
                }))
            }
        };
        Ok(Authenticator { kind })
    }

    /// The kind of authentication, for the log (`relay_started`): `none`, `token`, `jwt-hmac`,
    /// or the family of the key file's first key, `jwt-rsa`, `jwt-eddsa` or `jwt-ec`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            Kind::Anonymous => "none",
            Kind::Token(_) => "token",
            Kind::Jwt(jwt) => jwt.keys.read().unwrap_or_else(|e| e.into_inner())[0].name,
        }
    }

    /// What the file the credentials are read from holds; `None` when they were given as
    /// such (or there are none), and nothing is read again ([`Self::reload_credentials`]).
    pub fn credential_file(&self) -> Option<CredentialFileKind> {
        let file = match &self.kind {
            Kind::Anonymous => None,
            Kind::Token(tokens) => tokens.file.as_ref(),
            Kind::Jwt(jwt) => jwt.file.as_ref(),
        };
        file.map(|f| f.what)
    }

    /// Read the credential file again if it changed since it was last read: `None` when it
    /// did not (or there is none); the number of tokens, secrets or keys now accepted; or why
    /// the new file cannot be used (empty, unreadable, gone, a line too short, a private key)
    /// — the credentials read before stay accepted, and the file is tried again when it
    /// changes. A rotation: put the new credential in the file beside the old, move the
    /// clients (or the issuer) over, and take the old one out — no restart, no session ended.
    /// Open sessions are not judged again: a JWT's ends at its `exp`, a static token's lasts.
    pub fn reload_credentials(&self) -> Option<Result<usize, String>> {
        match &self.kind {
            Kind::Anonymous => None,
            Kind::Token(tokens) => {
                let file = tokens.file.as_ref().filter(|f| f.changed())?;
                Some(secret_lines(file).map(|new| {
                    let n = new.len();
                    *tokens.accepted.write().unwrap_or_else(|e| e.into_inner()) = new;
                    n
                }))
            }
            Kind::Jwt(jwt) => {
                let file = jwt.file.as_ref().filter(|f| f.changed())?;
                Some(jwt_keys(file, &jwt.template).map(|keys| {
                    let n = keys.len();
                    *jwt.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
                    n
                }))
            }
        }
    }

    /// Whether clients must present a credential.
    pub fn required(&self) -> bool {
        !matches!(self.kind, Kind::Anonymous)
    }

    /// Check a credential (`None` or empty: none presented) and return the claims.
    pub fn verify(&self, credential: Option<&str>) -> Result<Claims, AuthError> {
        let credential = credential.filter(|c| !c.is_empty());
        match &self.kind {
            Kind::Anonymous => Ok(Claims::new()),
            Kind::Token(tokens) => {
                let given = credential.ok_or(AuthError::Missing)?;
                let accepted = tokens.accepted.read().unwrap_or_else(|e| e.into_inner());
                // Compared with every token, not up to the first that matches (`|` does not
                // stop early): the time taken tells no more than one comparison's would.
                let matches = accepted.iter().fold(false, |matches, token| {
                    matches | constant_time_eq(given.as_bytes(), token.expose().as_bytes())
                });
                if matches {
                    let mut c = Claims::new();
                    c.insert("sub".into(), Value::from("token"));
                    Ok(c)
                } else {
                    Err(AuthError::InvalidToken)
                }
            }
            Kind::Jwt(jwt) => {
                let given = credential.ok_or(AuthError::Missing)?;
                let data = jwt.decode(given)?;
                // jsonwebtoken 9 skips its `nbf` check when `nbf` is not a number (text,
                // true): a token whose issuer wrote "not before" as text would pass at any
                // time (CVE-2026-25537). Refused here whatever the library version does.
                if let Some(m) = misshapen_time_claim(&data.claims) {
                    return Err(AuthError::Claims(m));
                }
                if let Some(m) = issued_in_the_future(&data.claims) {
                    return Err(AuthError::Claims(m));
                }
                let mut claims = Claims::new();
                for (k, v) in &data.claims {
                    let v = blazedb::codec::json::from_json(v)
                        .map_err(|e| AuthError::Claims(format!("claim {k:?}: {e}")))?;
                    if let Some(v) = without_nulls(v) {
                        claims.insert(k.clone(), v);
                    }
                }
                Ok(claims)
            }
        }
    }
}

impl VerifyingKey {
    fn new(
        key: DecodingKey,
        algorithms: Vec<Algorithm>,
        name: &'static str,
        template: &Validation,
    ) -> VerifyingKey {
        let mut validation = template.clone();
        validation.algorithms = algorithms;
        VerifyingKey {
            key,
            validation,
            name,
        }
    }
}

impl Jwt {
    /// The token's claims, from the first key that verifies its signature. A key of another
    /// family, or one whose signature does not match, passes the token to the next; any
    /// other refusal (expired, the claims) is the token's own and is final.
    fn decode(
        &self,
        token: &str,
    ) -> Result<jsonwebtoken::TokenData<serde_json::Map<String, serde_json::Value>>, AuthError>
    {
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        let mut refusal: Option<(ErrorKind, &Validation)> = None;
        for k in keys.iter() {
            match jsonwebtoken::decode(token, &k.key, &k.validation) {
                Ok(data) => return Ok(data),
                Err(e) => {
                    let kind = e.into_kind();
                    let next_key_may_pass = matches!(
                        kind,
                        ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm
                    );
                    if !next_key_may_pass {
                        return Err(jwt_error(&kind, &k.validation, token));
                    }
                    // A signature that does not match says more than an algorithm of
                    // another key's family.
                    if !matches!(refusal, Some((ErrorKind::InvalidSignature, _))) {
                        refusal = Some((kind, &k.validation));
                    }
                }
            }
        }
        let (kind, validation) = refusal.expect("at least one key");
        let mut accepted = validation.clone();
        accepted.algorithms.clear();
        for algorithm in keys.iter().flat_map(|k| k.validation.algorithms.iter()) {
            if !accepted.algorithms.contains(algorithm) {
                accepted.algorithms.push(*algorithm);
            }
        }
        Err(jwt_error(&kind, &accepted, token))
    }
}

/// A claim's value with its nulls taken out (map entries and list elements, at any depth);
/// `None` for null itself, so a claim whose value is null is one the token lacks. To the rules
/// a missing claim is unknown and never matches, while a present null equals every missing
/// field: `org_id == $auth.org_id` with `"org_id": null` read every record without `org_id`
/// (and `org_id in $auth.orgs` with `"orgs": [null]` the same).
fn without_nulls(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Map(m) => Some(Value::Map(
            m.into_iter()
                .filter_map(|(k, v)| Some((k, without_nulls(v)?)))
                .collect(),
        )),
        Value::List(items) => Some(Value::List(
            items.into_iter().filter_map(without_nulls).collect(),
        )),
        other => Some(other),
    }
}

/// What a refused JWT's holder is told: what is wrong and what to do, never the library's
/// bare error name.
fn jwt_error(kind: &ErrorKind, validation: &Validation, token: &str) -> AuthError {
    let expected = |set: &Option<std::collections::HashSet<String>>| {
        let mut v: Vec<&str> = set.iter().flatten().map(String::as_str).collect();
        v.sort_unstable();
        v.join(", ")
    };
    // Faults of the claims (`Claims`) return early: they count under their own kind in
    // `auth_failures_total`, apart from a token that cannot be read (`Jwt`).
    let m = match kind {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => return AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm => format!(
            "signed with an algorithm this relay does not accept for its key (it accepts {})",
            accepted_algs(validation)
        ),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => match unaccepted_alg(token) {
            // The library fails to parse a header whose `alg` it does not know ("none",
            // say) as if the token were not a JWT at all.
            Some(alg) => format!(
                "signed with algorithm {alg:?}, which this relay does not accept (it accepts \
                 {}): ask its issuer for a token it signs with the relay's key",
                accepted_algs(validation)
            ),
            None => match misshapen_claim(token) {
                Some(m) => return AuthError::Claims(m),
                None => "not a JWT (three base64url parts: header.claims.signature): send \
                         the token exactly as it was issued"
                    .into(),
            },
        },
        ErrorKind::InvalidAudience => {
            return AuthError::Claims(format!(
                "issued for another audience: this relay accepts `aud` {}",
                expected(&validation.aud)
            ))
        }
        ErrorKind::InvalidIssuer => {
            return AuthError::Claims(format!(
                "issued by another issuer: this relay accepts `iss` {}",
                expected(&validation.iss)
            ))
        }
        // The library says "missing" also for a claim of the wrong type (`"exp": "1796…"`).
        ErrorKind::MissingRequiredClaim(c)
            if claims_json(token).is_some_and(|j| j.get(c).is_some()) =>
        {
            return AuthError::Claims(format!(
                "the token's `{c}` claim is not a number of seconds since 1970, as JWT \
                 requires: ask its issuer"
            ))
        }
        ErrorKind::MissingRequiredClaim(c) => {
            return AuthError::Claims(format!(
                "the token has no `{c}` claim, which this relay requires: ask its issuer"
            ))
        }
        ErrorKind::ImmatureSignature => {
            return AuthError::Claims(
                "not valid yet (its `nbf` is in the future): check the clocks of the issuer \
                 and the relay"
                    .into(),
            )
        }
        other => format!("{other:?}"),
    };
    AuthError::Jwt(m)
}

/// A token whose `iat` (issued at) is later than now, beyond [`JWT_LEEWAY_S`]: jsonwebtoken
/// does not look at `iat`. Such a token comes from an issuer whose clock is ahead, or was
/// minted to outlive a revocation by date; refused as PyJWT and jose4j refuse it, saying
/// what to check. `None` when `iat` is absent or not in the future.
fn issued_in_the_future(claims: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let iat = claims.get("iat")?.as_f64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let ahead = iat - now;
    (ahead > JWT_LEEWAY_S as f64).then(|| {
        format!(
            "the token says it was issued {ahead:.0} s from now (its `iat` is in the future): \
             check the clocks of the issuer and the relay"
        )
    })
}

/// What is wrong with a registered claim that the library refuses to read (it reads `sub`
/// as a string, number, bool or null, and `exp` / `nbf` as numbers) in a token whose
/// claims are otherwise JSON: it says the token is "not a JWT". `None` when none is.
fn misshapen_claim(token: &str) -> Option<String> {
    let claims = claims_json(token)?;
    let claims = claims.as_object()?;
    let shape = |v: &serde_json::Value| match v {
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::String(_) => "text",
        serde_json::Value::Bool(_) => "true or false",
        _ => "a number",
    };
    if let Some(v) = claims.get("sub").filter(|v| v.is_object() || v.is_array()) {
        return Some(format!(
            "the token's `sub` claim is {}; it must be text (or a number): ask its issuer",
            shape(v)
        ));
    }
    misshapen_time_claim(claims)
}

/// What is wrong with a time claim (`exp`, `nbf`, `iat`) present with a value that is not a
/// number (null counts as absent); `None` when each is a number or absent.
fn misshapen_time_claim(claims: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let shape = |v: &serde_json::Value| match v {
        serde_json::Value::Object(_) => "an object",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::String(_) => "text",
        _ => "true or false",
    };
    ["exp", "nbf", "iat"].into_iter().find_map(|c| {
        let v = claims.get(c).filter(|v| !v.is_number() && !v.is_null())?;
        Some(format!(
            "the token's `{c}` claim is {}, not a number of seconds since 1970, as JWT \
             requires: ask its issuer",
            shape(v)
        ))
    })
}

/// The claims (second part) of a token, as JSON, without checking anything.
fn claims_json(token: &str) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let claims = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The `alg` of a token whose header is JSON with a string `alg` that jsonwebtoken does
/// not know (so that its parse failed), e.g. `"none"`, as a message may repeat it
/// ([`blazedb::error::excerpt`]); `None` for anything else.
fn unaccepted_alg(token: &str) -> Option<String> {
    use base64::Engine as _;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let json: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let alg = json.get("alg")?.as_str()?;
    // Cut: the header is the client's, and may be as long as a request head.
    alg.parse::<Algorithm>()
        .is_err()
        .then(|| blazedb::error::excerpt(alg))
}

/// The algorithms `validation` accepts, for messages.
fn accepted_algs(validation: &Validation) -> String {
    let names: Vec<String> = validation
        .algorithms
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    names.join(", ")
}

/// The credential of an HTTP request: `Authorization: Bearer <t>`, else `?token=<t>`.
pub fn credential_from_http(
    headers: &axum::http::HeaderMap,
    uri: &axum::http::Uri,
) -> Option<String> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?.trim();
        // `Bearer` alone (HTTP parsers trim the space an empty variable left): an empty
        // credential, which `authenticate` tells apart from another scheme.
        if v.eq_ignore_ascii_case("bearer") {
            return Some(String::new());
        }
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| token.trim().to_owned());
    }
    let query = uri.query()?;
    #[derive(serde::Deserialize)]
    struct TokenParam {
        token: Option<String>,
    }
    axum::extract::Query::<TokenParam>::try_from_uri(&format!("/?{query}").parse().ok()?)
        .ok()?
        .0
        .token
}

/// The keys of a JWT credential file: a key for each of its HMAC secrets, or its public keys.
fn jwt_keys(file: &CredentialFile, template: &Validation) -> Result<Vec<VerifyingKey>, String> {
    match file.what {
        CredentialFileKind::JwtSecrets => Ok(secret_lines(file)?
            .iter()
            .map(|secret| hmac_key(secret, template))
            .collect()),
        CredentialFileKind::JwtPublicKeys => public_keys(&file.path, template),
        CredentialFileKind::Tokens => unreachable!("a token file is never read for JWT keys"),
    }
}

/// The key of an HMAC secret, with the HMAC algorithms.
fn hmac_key(secret: &Secret, template: &Validation) -> VerifyingKey {
    VerifyingKey::new(
        DecodingKey::from_secret(secret.expose().as_bytes()),
        vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        "jwt-hmac",
        template,
    )
}

/// Refuse a static token or an HMAC secret (`kind`) that is empty or shorter than
/// [`AUTH_SECRET_BYTES_MIN`]: its length is all that keeps it from being guessed (a token) or
/// from letting whoever guesses it mint any claims (a secret). `line` is where it was read,
/// `None` for one given as such (`--token`, `BLAZEDB_RELAY_TOKEN`, ...). The message never
/// repeats the secret.
fn check_secret(
    secret: &str,
    kind: CredentialFileKind,
    line: Option<(&Path, usize)>,
) -> Result<(), String> {
    let len = secret.len();
    if len >= AUTH_SECRET_BYTES_MIN {
        return Ok(());
    }
    Err(match (kind, line) {
        (CredentialFileKind::Tokens, None) if len == 0 => {
            "the token is empty (is the variable meant to hold it set?): give a long random one, \
             e.g. `openssl rand -hex 32 > token.txt` and --token-file token.txt"
                .to_owned()
        }
        (CredentialFileKind::Tokens, None) => format!(
            "the token is {len} bytes long, and a static token must have at least \
             {AUTH_SECRET_BYTES_MIN} (nothing slows down a client guessing it): make a random \
             one, e.g. `openssl rand -hex 32 > token.txt`, and start the relay with \
             --token-file token.txt"
        ),
        (_, None) => format!(
            "the JWT secret is shorter than {AUTH_SECRET_BYTES_MIN} bytes: use a long random \
             secret, e.g. `openssl rand -hex 32 > jwt-secret.txt` and --jwt-secret-file \
             jwt-secret.txt"
        ),
        (kind, Some((path, n))) => format!(
            "line {n} of the {} {} is {len} bytes long, and each {} must have at least \
             {AUTH_SECRET_BYTES_MIN}: put a long random one on that line, e.g. from `openssl \
             rand -hex 32`",
            kind.file_name(),
            path.display(),
            match kind {
                CredentialFileKind::Tokens => "static token",
                _ => "JWT secret",
            },
        ),
    })
}

/// The static tokens or HMAC secrets of a token or secret file, one a line: blank lines and
/// the whitespace around each are ignored (what editors, `echo` and a rotation by hand leave
/// there). Each must pass [`check_secret`], and a file without any is refused: naming a file
/// says a secret is meant. The messages name the file and the line, never a secret.
fn secret_lines(file: &CredentialFile) -> Result<Vec<Secret>, String> {
    let (path, name) = (&file.path, file.what.file_name());
    let text = read_secret_file(path, name)?;
    let mut secrets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let secret = line.trim();
        if secret.is_empty() {
            continue;
        }
        check_secret(secret, file.what, Some((path, i + 1)))?;
        secrets.push(Secret::new(secret));
    }
    if secrets.is_empty() {
        return Err(format!(
            "the {name} {} is empty (or holds only blank lines): write a long random secret in \
             it, e.g. `openssl rand -hex 32 > {}` (during a rotation, the old and the new, one \
             a line)",
            path.display(),
            path.display()
        ));
    }
    Ok(secrets)
}

/// The text of a token or secret file, at most [`SECRET_FILE_BYTES_MAX`], in memory that is
/// overwritten with zeros when dropped.
fn read_secret_file(path: &Path, name: &str) -> Result<zeroize::Zeroizing<String>, String> {
    use blazedb_net::secret_file::{read_secret_text, SecretFileError};
    read_secret_text(path, SECRET_FILE_BYTES_MAX).map_err(|e| match e {
        SecretFileError::Io(e) => format!("cannot read the {name} {}: {e}", path.display()),
        SecretFileError::TooLarge => format!(
            "the {name} {} is larger than {SECRET_FILE_BYTES_MAX} bytes: it does not hold just \
             secrets, one a line; check the path",
            path.display()
        ),
        SecretFileError::NotUtf8 => format!(
            "the {name} {} is not UTF-8 text: write each secret as text on a line of its \
             own (`openssl rand -hex 32` makes one)",
            path.display()
        ),
    })
}

/// The public keys in a PEM file, each with the algorithms of its family: one, or several
/// during a key rotation (the old and the new, one PEM block each). Every block must be a
/// public key; the error names the file and what to give instead.
fn public_keys(path: &Path, template: &Validation) -> Result<Vec<VerifyingKey>, String> {
    let text = std::fs::read(path)
        .map_err(|e| format!("cannot read the JWT public key {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    // jsonwebtoken reads an RSA *private* key as a decoding key too; a relay started with
    // one would refuse every token as "not issued for this relay". It needs the public half
    // only, and the private key has no business on the relay's machine.
    if text.contains("PRIVATE KEY-----") {
        return Err(format!(
            "{} holds a private key: give the relay its public half, e.g. `openssl pkey -in \
             {} -pubout -out public.pem` (the relay only verifies tokens; keep the private key \
             with their issuer)",
            path.display(),
            path.display()
        ));
    }
    let not_a_key = || {
        format!(
            "{} is not a PEM public key of a supported kind (RSA, Ed25519, EC P-256/P-384); \
             give the public half, e.g. `openssl pkey -in private.pem -pubout` (during a key \
             rotation, the old and the new public key one after the other)",
            path.display()
        )
    };
    let mut keys = Vec::new();
    for block in pem_blocks(&text) {
        let pem = block.as_bytes();
        let key = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            use Algorithm::*;
            let rsa = vec![RS256, RS384, RS512, PS256, PS384, PS512];
            VerifyingKey::new(k, rsa, "jwt-rsa", template)
        } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            VerifyingKey::new(k, vec![Algorithm::EdDSA], "jwt-eddsa", template)
        } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            let ec = vec![Algorithm::ES256, Algorithm::ES384];
            VerifyingKey::new(k, ec, "jwt-ec", template)
        } else {
            return Err(not_a_key());
        };
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(not_a_key());
    }
    Ok(keys)
}

/// Each `-----BEGIN …-----` … `-----END …-----` block of a PEM text, whole.
fn pem_blocks(text: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("-----BEGIN ") {
            current = Some(String::new());
        }
        if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
            if line.starts_with("-----END ") {
                blocks.extend(current.take());
            }
        }
    }
    blocks
}

/// Compare without an early exit on the first differing byte, so the time taken does not tell
/// an attacker how much of a guess was right. (The length is not secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn authenticator(auth: AuthConfig) -> Authenticator {
        Authenticator::from_config(&RelayConfig {
            auth,
            ..RelayConfig::default()
        })
        .unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn static_token() {
        let a = authenticator(AuthConfig::Token(Secret::new("s3cret-static-token")));
        assert_eq!(a.verify(None), Err(AuthError::Missing));
        assert_eq!(a.verify(Some("")), Err(AuthError::Missing));
        assert_eq!(
            a.verify(Some("s3cret-static-tokem")),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(
            a.verify(Some("s3cret-static-token")).unwrap()["sub"],
            Value::from("token")
        );
    }

    #[test]
    fn hs256_claims_expiry_and_signature() {
        let secret = "0123456789abcdef-secret";
        let a = authenticator(AuthConfig::JwtSecret(Secret::new(secret)));
        let key = EncodingKey::from_secret(secret.as_bytes());
        let tok = |exp: u64, key: &EncodingKey| {
            let claims = serde_json::json!({"sub": "alice", "role": "admin", "n": 3, "exp": exp});
            encode(&Header::default(), &claims, key).unwrap()
        };
        let claims = a.verify(Some(&tok(now() + 60, &key))).unwrap();
        assert_eq!(claims["sub"], Value::from("alice"));
        assert_eq!(claims["n"], Value::Int(3));
        assert_eq!(
            a.verify(Some(&tok(now() - 3600, &key))),
            Err(AuthError::Expired)
        );
        let other = EncodingKey::from_secret(b"another-secret-of-16+ bytes");
        assert_eq!(
            a.verify(Some(&tok(now() + 60, &other))),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            a.verify(Some("not.a.jwt")),
            Err(AuthError::Jwt(_))
        ));
        // A token without `exp` is refused: it would never expire.
        let no_exp = encode(&Header::default(), &serde_json::json!({"sub": "x"}), &key).unwrap();
        assert!(matches!(a.verify(Some(&no_exp)), Err(AuthError::Claims(_))));
        // One whose `exp` is text is told so, not that it has none.
        let text_exp = serde_json::json!({"sub": "x", "exp": "1796000000"});
        let text_exp = encode(&Header::default(), &text_exp, &key).unwrap();
        let e = a.verify(Some(&text_exp)).unwrap_err().to_string();
        assert!(e.contains("`exp` claim is not a number"), "{e}");
        // A `sub` or `nbf` the library cannot read: the claim is named, not "not a JWT".
        for (claims, says) in [
            (
                serde_json::json!({"sub": {"id": "x"}, "exp": now() + 60}),
                "`sub` claim is an object",
            ),
            (
                serde_json::json!({"sub": ["x"], "exp": now() + 60}),
                "`sub` claim is a list",
            ),
            (
                serde_json::json!({"sub": "x", "nbf": {"a": 1}, "exp": now() + 60}),
                "`nbf` claim is an object",
            ),
        ] {
            let token = encode(&Header::default(), &claims, &key).unwrap();
            let e = a.verify(Some(&token)).unwrap_err().to_string();
            assert!(
                e.contains(says) && !e.contains("not a JWT"),
                "{claims}: {e}"
            );
        }
    }

    /// Each refusal counts under the kind of what was wrong (`auth_failures_total{kind}`):
    /// a token that is not the relay's is `invalid`, one past its `exp` `expired`, one whose
    /// claims are refused `claims`; presenting none is not a failure at all.
    #[test]
    fn refusals_have_a_failure_kind() {
        let secret = "0123456789abcdef-secret";
        let a = authenticator(AuthConfig::JwtSecret(Secret::new(secret)));
        let key = EncodingKey::from_secret(secret.as_bytes());
        let jwt = |claims: serde_json::Value| encode(&Header::default(), &claims, &key).unwrap();
        let kind = |token: Option<&str>| a.verify(token).unwrap_err().failure_kind();
        let other = EncodingKey::from_secret(b"another-secret-of-16+ bytes");
        let foreign = encode(
            &Header::default(),
            &serde_json::json!({"sub": "x", "exp": now() + 60}),
            &other,
        )
        .unwrap();
        for (token, expected) in [
            (
                jwt(serde_json::json!({"sub": "x", "exp": now() - 3600})),
                "expired",
            ),
            (foreign, "invalid"),
            ("not.a.jwt".to_owned(), "invalid"),
            (jwt(serde_json::json!({"sub": "x"})), "claims"),
            (
                jwt(serde_json::json!({"sub": "x", "exp": "soon"})),
                "claims",
            ),
            (
                jwt(serde_json::json!({"sub": "x", "exp": now() + 60, "nbf": now() + 600})),
                "claims",
            ),
            (
                jwt(serde_json::json!({"sub": "x", "exp": now() + 3600, "iat": now() + 600})),
                "claims",
            ),
            (
                jwt(serde_json::json!({"sub": ["x"], "exp": now() + 60})),
                "claims",
            ),
        ] {
            let got = kind(Some(&token)).map(AuthFailureKind::as_str);
            assert_eq!(got, Some(expected), "{token}");
        }
        assert_eq!(kind(None), None);
        let with_audience = Authenticator::from_config(&RelayConfig {
            auth: AuthConfig::JwtSecret(Secret::new(secret)),
            jwt_audience: Some("relay".into()),
            ..RelayConfig::default()
        })
        .unwrap();
        let elsewhere = jwt(serde_json::json!({"sub": "x", "exp": now() + 60, "aud": "other"}));
        let e = with_audience.verify(Some(&elsewhere)).unwrap_err();
        assert_eq!(e.failure_kind(), Some(AuthFailureKind::Claims), "{e}");

        let token = authenticator(AuthConfig::Token(Secret::new("s3cret-static-token")));
        let e = token.verify(Some("s3cret-static-tokem")).unwrap_err();
        assert_eq!(e.failure_kind(), Some(AuthFailureKind::Invalid));
        for e in [
            AuthError::Missing,
            AuthError::NotBearer,
            AuthError::EmptyCredential,
        ] {
            assert_eq!(e.failure_kind(), None, "{e}");
            assert!(!e.is_guess());
        }
    }

    /// A token issued in the future (`iat` past now, beyond the leeway) is refused saying so;
    /// one issued now or before passes.
    #[test]
    fn a_token_issued_in_the_future_is_refused() {
        let secret = "0123456789abcdef-secret";
        let a = authenticator(AuthConfig::JwtSecret(Secret::new(secret)));
        let token = |iat: u64| {
            encode(
                &Header::default(),
                &serde_json::json!({"sub": "x", "exp": now() + 3600, "iat": iat}),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let e = a.verify(Some(&token(now() + 600))).unwrap_err().to_string();
        assert!(
            e.contains("`iat` is in the future") && e.contains("check the clocks"),
            "{e}"
        );
        assert!(a.verify(Some(&token(now()))).is_ok());
        assert!(a.verify(Some(&token(now() - 600))).is_ok());
    }

    /// A claim whose value is null is one the token lacks, so a rule comparing it never
    /// matches: with it present as null, `org_id == $auth.org_id` read every record without
    /// `org_id`. Nulls inside a claim go too (`[null]` held every record without the field).
    #[test]
    fn a_null_claim_is_one_the_token_lacks() {
        let secret = "0123456789abcdef-secret";
        let a = authenticator(AuthConfig::JwtSecret(Secret::new(secret)));
        let token = encode(
            &Header::default(),
            &serde_json::json!({
                "sub": "mallory", "exp": now() + 60, "org_id": null,
                "org": {"id": null, "name": "x"}, "orgs": [null, "a"],
            }),
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap();
        let claims = a.verify(Some(&token)).unwrap();
        assert!(!claims.contains_key("org_id"), "{claims:?}");
        let org: BTreeMap<String, Value> = [("name".to_owned(), Value::from("x"))].into();
        assert_eq!(claims["org"], Value::Map(org));
        assert_eq!(claims["orgs"], Value::List(vec![Value::from("a")]));

        let rules = crate::rules::Rules::parse(
            "[docs]\nread = \"org_id == $auth.org_id || org_id == $auth.org.id \
             || org_id in $auth.orgs\"\n",
            Path::new("rules.toml"),
        )
        .unwrap();
        let id = blazedb::RecordId([1; 16]);
        let no_org: BTreeMap<String, Value> = [("title".to_owned(), Value::from("x"))].into();
        assert!(!rules.can_read("docs", id, &no_org, &params(&claims)));
        let org_a: BTreeMap<String, Value> = [("org_id".to_owned(), Value::from("a"))].into();
        assert!(rules.can_read("docs", id, &org_a, &params(&claims)));
    }

    #[test]
    fn short_secret_and_bad_key_file_are_startup_errors() {
        let short = Authenticator::from_config(&RelayConfig {
            auth: AuthConfig::JwtSecret(Secret::new("short")),
            ..RelayConfig::default()
        });
        assert!(matches!(short, Err(RelayError::Auth(_))));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let e = Authenticator::from_config(&RelayConfig {
            auth: AuthConfig::JwtPublicKey(path),
            ..RelayConfig::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("not a PEM public key"), "{e}");
    }

    /// The key file read again: nothing when unchanged; the keys now, one per PEM block;
    /// a file that cannot be used leaves the keys read before accepted.
    #[test]
    fn a_changed_key_file_is_read_again_and_a_bad_one_changes_nothing() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let rsa_public = std::fs::read_to_string(fixtures.join("jwt_rsa_public.pem")).unwrap();
        let rsa_private = std::fs::read(fixtures.join("jwt_rsa_private.pem")).unwrap();
        let token = encode(
            &Header::new(Algorithm::RS256),
            &serde_json::json!({"sub": "x", "exp": now() + 600}),
            &EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.pem");
        let publish = |text: &str| {
            let tmp = dir.path().join("keys.new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        publish(&rsa_public);
        let a = authenticator(AuthConfig::JwtPublicKey(path.clone()));
        assert_eq!(a.credential_file(), Some(CredentialFileKind::JwtPublicKeys));
        assert_eq!(a.reload_credentials(), None, "unchanged");
        publish(&format!("{rsa_public}{rsa_public}"));
        assert_eq!(a.reload_credentials(), Some(Ok(2)));
        assert_eq!(a.reload_credentials(), None);
        for bad in [
            "not a key",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        ] {
            publish(bad);
            let why = a.reload_credentials().unwrap().unwrap_err();
            assert!(why.contains("keys.pem"), "{why}");
            assert!(a.verify(Some(&token)).is_ok(), "the keys read before stay");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(a
            .reload_credentials()
            .unwrap()
            .unwrap_err()
            .contains("cannot read"));
        assert!(a.verify(Some(&token)).is_ok());
        let secret = authenticator(AuthConfig::JwtSecret(Secret::new(
            "0123456789abcdef-secret",
        )));
        assert_eq!(secret.credential_file(), None);
        assert_eq!(secret.reload_credentials(), None);
    }

    /// A token or secret file: one a line, blank lines and the whitespace around each
    /// ignored; read again when it changes, and one that cannot be used (blank, a line too
    /// short, gone) leaves the ones read before accepted. Messages never repeat a secret.
    #[test]
    fn a_token_file_holds_one_token_a_line_and_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        let publish = |text: &str| {
            let tmp = dir.path().join("tokens.new");
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        };
        let (old, new) = ("the-old-token-of-the-relay", "the-new-token-of-the-relay");
        publish(&format!("\n  {old}  \r\n\n"));
        let a = authenticator(AuthConfig::TokenFile(path.clone()));
        assert_eq!(a.credential_file(), Some(CredentialFileKind::Tokens));
        assert_eq!(a.kind_name(), "token");
        assert_eq!(a.verify(Some(old)).unwrap()["sub"], Value::from("token"));
        assert_eq!(a.verify(Some(new)), Err(AuthError::InvalidToken));
        // The whitespace around a line is not part of the token.
        assert_eq!(
            a.verify(Some(&format!("  {old}  "))),
            Err(AuthError::InvalidToken)
        );
        assert_eq!(a.reload_credentials(), None, "unchanged");

        publish(&format!("{old}\n\n\t{new}\n"));
        assert_eq!(a.reload_credentials(), Some(Ok(2)));
        assert_eq!(a.reload_credentials(), None);
        assert!(a.verify(Some(old)).is_ok() && a.verify(Some(new)).is_ok());

        for bad in ["", "\n  \n\t\r\n", &format!("{new}\nshort\n")] {
            publish(bad);
            let why = a.reload_credentials().unwrap().unwrap_err();
            assert!(
                why.contains("token file") && why.contains("tokens"),
                "{why}"
            );
            assert!(!why.contains(new) && !why.contains("short\n"), "{why}");
            assert!(a.verify(Some(old)).is_ok() && a.verify(Some(new)).is_ok());
        }
        assert!(
            a.reload_credentials().is_none(),
            "a bad file is tried again only when it changes"
        );
        publish(&format!("{new}\nshort\n"));
        let why = a.reload_credentials().unwrap().unwrap_err();
        assert!(
            why.contains("line 2 of the token file") && why.contains("5 bytes"),
            "{why}"
        );
        std::fs::remove_file(&path).unwrap();
        let why = a.reload_credentials().unwrap().unwrap_err();
        assert!(why.contains("cannot read the token file"), "{why}");

        publish(&format!("{new}\n"));
        assert_eq!(a.reload_credentials(), Some(Ok(1)));
        assert_eq!(a.verify(Some(old)), Err(AuthError::InvalidToken));
        assert!(a.verify(Some(new)).is_ok());

        // A token given as such is read once: there is no file to read again.
        let given = authenticator(AuthConfig::Token(Secret::new(old)));
        assert_eq!(given.credential_file(), None);
        assert_eq!(given.reload_credentials(), None);
    }

    /// A file of blank lines, or with a secret shorter than the minimum on any line, does not
    /// start the relay; the message names the file (and the line), not the secret.
    #[test]
    fn a_secret_file_of_blank_lines_or_a_short_line_is_a_startup_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets");
        for (auth, name) in [
            (AuthConfig::TokenFile(path.clone()), "token file"),
            (AuthConfig::JwtSecretFile(path.clone()), "JWT secret file"),
        ] {
            let start = |text: &str| {
                std::fs::write(&path, text).unwrap();
                Authenticator::from_config(&RelayConfig {
                    auth: auth.clone(),
                    ..RelayConfig::default()
                })
            };
            for blank in ["", "\n", " \n\n\t \r\n"] {
                let e = start(blank).unwrap_err().to_string();
                assert!(e.contains(name) && e.contains("is empty"), "{blank:?}: {e}");
            }
            let e = start("0123456789abcdef-long-enough\n\n  abc  \n")
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("line 3 of the {name}")), "{e}");
            assert!(!e.contains("abc ") && !e.contains("long-enough"), "{e}");
            std::fs::write(&path, [0xff, 0xfe, b'\n']).unwrap();
            let e = Authenticator::from_config(&RelayConfig {
                auth: auth.clone(),
                ..RelayConfig::default()
            })
            .unwrap_err();
            assert!(e.to_string().contains("not UTF-8"), "{e}");
        }
    }

    /// A JWT passes if any secret of the file verifies its signature; one that verifies but
    /// expired is refused as expired whichever secret signed it.
    #[test]
    fn a_jwt_secret_file_holds_one_secret_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwt-secrets");
        let (old, new) = ("0123456789abcdef-old-secret", "0123456789abcdef-new-secret");
        std::fs::write(&path, format!("{old}\n\n  {new}\n")).unwrap();
        let a = authenticator(AuthConfig::JwtSecretFile(path.clone()));
        assert_eq!(a.credential_file(), Some(CredentialFileKind::JwtSecrets));
        assert_eq!(a.kind_name(), "jwt-hmac");
        let token = |secret: &str, exp: u64| {
            encode(
                &Header::new(Algorithm::HS384),
                &serde_json::json!({"sub": "x", "exp": exp}),
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        assert!(a.verify(Some(&token(old, now() + 60))).is_ok());
        assert!(a.verify(Some(&token(new, now() + 60))).is_ok());
        assert_eq!(
            a.verify(Some(&token("0123456789abcdef-any-other", now() + 60))),
            Err(AuthError::BadSignature)
        );
        assert_eq!(
            a.verify(Some(&token(new, now() - 3600))),
            Err(AuthError::Expired)
        );
        assert_eq!(a.reload_credentials(), None);
        let tmp = dir.path().join("jwt-secrets.new");
        std::fs::write(&tmp, format!("{new}\n")).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(a.reload_credentials(), Some(Ok(1)));
        assert_eq!(
            a.verify(Some(&token(old, now() + 60))),
            Err(AuthError::BadSignature)
        );
        assert!(a.verify(Some(&token(new, now() + 60))).is_ok());
    }

    #[test]
    fn credentials_from_header_or_query() {
        let mut h = axum::http::HeaderMap::new();
        let uri: axum::http::Uri = "/v1/sync?token=a%20b&x=1".parse().unwrap();
        assert_eq!(credential_from_http(&h, &uri).as_deref(), Some("a b"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(credential_from_http(&h, &uri).as_deref(), Some("xyz"));
        h.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(credential_from_http(&h, &uri), None);
        let plain: axum::http::Uri = "/v1/sync".parse().unwrap();
        assert_eq!(
            credential_from_http(&axum::http::HeaderMap::new(), &plain),
            None
        );
    }
}
