//! A JWT whose `nbf`, `exp` or `iat` is not a number (text, true, a list) is refused with a
//! message naming the claim, even where the signature is good: a string `nbf` far in the
//! future must not pass as "no nbf" (CVE-2026-25537 in jsonwebtoken 9); numeric claims work
//! as before.

mod common;

use blazedb_relay::AuthConfig;
use common::{jwt_hs256, now_s, query, TestRelay};
use serde_json::json;

const SECRET: &str = "a-jwt-secret-for-the-time-claims";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_claims_that_are_not_numbers_are_refused() {
    let relay = TestRelay::start(|c| c.auth = AuthConfig::JwtSecret(SECRET.into())).await;
    let exp = now_s() + 600;
    let thousand_years = now_s() + 1000 * 365 * 24 * 3600;
    let body = json!({"collection": "notes"});

    let ok = jwt_hs256(
        SECRET,
        json!({"sub": "alice", "exp": exp, "nbf": now_s() - 10}),
    );
    assert_eq!(query(relay.addr, &ok, body.clone()).await.status, 200);
    let later = jwt_hs256(
        SECRET,
        json!({"sub": "alice", "exp": exp, "nbf": thousand_years}),
    );
    assert_eq!(query(relay.addr, &later, body.clone()).await.status, 401);

    for (claim, value, shape) in [
        ("nbf", json!(thousand_years.to_string()), "text"),
        ("nbf", json!(true), "true or false"),
        ("iat", json!(now_s().to_string()), "text"),
        ("iat", json!([1]), "a list"),
    ] {
        let mut claims = json!({"sub": "alice", "exp": exp});
        claims[claim] = value.clone();
        let token = jwt_hs256(SECRET, claims);
        let r = query(relay.addr, &token, body.clone()).await;
        assert_eq!(r.status, 401, "{claim}: {value} passed");
        let error = r.json()["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains(&format!("`{claim}` claim is {shape}, not a number")),
            "{error}"
        );
    }
    relay.stop().await;
}
