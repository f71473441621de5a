//! `--jwt-public-key FILE` holds one public key or several (one PEM block each), and is read
//! again when it changes: an issuer's signing key is rotated without a restart — the new
//! public key added beside the old, tokens of either accepted, the old one taken out once its
//! tokens have expired — and sessions open under the old key go on. Keys of different
//! families (Ed25519 beside RSA) mix.

mod common;

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use blazedb_relay::AuthConfig;
use common::{
    connect_ws, now_s, open, publish, refused, still_syncing, until_accepted, Client, TestRelay,
};
use serde_json::json;

/// A fresh Ed25519 key pair: its PKCS#8 private key and its public key as a PEM block.
fn ed25519() -> (Vec<u8>, String) {
    use ring::signature::KeyPair;
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    let mut spki = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    spki.extend_from_slice(pair.public_key().as_ref());
    let pem = format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(&spki)
    );
    (pkcs8.as_ref().to_vec(), pem)
}

fn sign_eddsa(pkcs8: &[u8], sub: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &json!({"sub": sub, "exp": now_s() + 600}),
        &jsonwebtoken::EncodingKey::from_ed_der(pkcs8),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signing_key_is_rotated_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwt-public.pem");
    let ((old_private, old_public), (new_private, new_public)) = (ed25519(), ed25519());
    publish(&keys, &[&old_public]);
    let relay = TestRelay::start(|c| {
        c.auth = AuthConfig::JwtPublicKey(keys.clone());
        // The waits below try a token again and again until the file is read: without this
        // the address would soon be refused for its failures, whatever the keys.
        c.limits.auth_failures_per_address_max = 0;
    })
    .await;
    relay.db.insert("notes", [("n", 1)]).unwrap();
    let (old_token, new_token) = (
        sign_eddsa(&old_private, "alice"),
        sign_eddsa(&new_private, "bob"),
    );
    connect_ws(relay.addr, Some(&old_token))
        .await
        .expect("the old key's token");
    let (status, body) = refused(connect_ws(relay.addr, Some(&new_token)).await.unwrap_err());
    assert_eq!(status, 401);
    assert!(
        body["error"].as_str().unwrap().contains("signature"),
        "{body}"
    );

    // A session under the old key, open all along.
    let db = open(dir.path(), "alice");
    let alice = Client::connect(&relay, db.clone(), &old_token).await;
    alice.caught_up().await;

    // The new public key beside the old: tokens of either pass.
    publish(&keys, &[&old_public, &new_public]);
    until_accepted(relay.addr, &new_token, true).await;
    connect_ws(relay.addr, Some(&old_token))
        .await
        .expect("the old key's token, during the rotation");

    // A file caught broken changes nothing: both keys stay accepted.
    publish(
        &keys,
        &["-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"],
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    connect_ws(relay.addr, Some(&old_token))
        .await
        .expect("the keys read before stay");
    connect_ws(relay.addr, Some(&new_token))
        .await
        .expect("the keys read before stay");

    // The old key taken out: its tokens are refused from then on, the new key's pass.
    publish(&keys, &[&new_public]);
    until_accepted(relay.addr, &old_token, false).await;
    connect_ws(relay.addr, Some(&new_token))
        .await
        .expect("the new key's token");

    // The session that began under the old key goes on (until its token expires).
    still_syncing(&relay, &db).await;
    assert!(!alice.task.is_finished());
    relay.stop().await;
}

/// Keys of two families in one file: a token passes with the key of its algorithm, and a
/// refused one is told every algorithm the relay accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_of_different_families_mix() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("jwt-public.pem");
    let (ed_private, ed_public) = ed25519();
    let rsa_public = std::fs::read_to_string(fixtures.join("jwt_rsa_public.pem")).unwrap();
    publish(&keys, &[&rsa_public, &ed_public]);
    let relay = TestRelay::start(|c| c.auth = AuthConfig::JwtPublicKey(keys.clone())).await;

    let rsa_private = std::fs::read(fixtures.join("jwt_rsa_private.pem")).unwrap();
    let rs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &json!({"sub": "carol", "exp": now_s() + 600}),
        &jsonwebtoken::EncodingKey::from_rsa_pem(&rsa_private).unwrap(),
    )
    .unwrap();
    connect_ws(relay.addr, Some(&rs256))
        .await
        .expect("RS256 with the RSA key");
    connect_ws(relay.addr, Some(&sign_eddsa(&ed_private, "dave")))
        .await
        .expect("EdDSA with the Ed25519 key");
    let hs = common::jwt_hs256(
        "an-hmac-secret-nobody-configured",
        json!({"sub": "eve", "exp": now_s() + 600}),
    );
    let (status, body) = refused(connect_ws(relay.addr, Some(&hs)).await.unwrap_err());
    assert_eq!(status, 401);
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("RS256") && error.contains("EdDSA"),
        "{error}"
    );
    relay.stop().await;
}
