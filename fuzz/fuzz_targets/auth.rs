//! What the auth layer parses from clients and the operator: htpasswd files, Basic
//! credentials, bearer tokens (JWT) and token scopes.
//!
//! Properties: never panics; no input the fuzzer makes verifies as a token (it does not know
//! the key), while every token we sign verifies to the claims signed; scopes and Basic
//! credentials print and parse back to themselves; htpasswd accepts only bcrypt entries.
#![no_main]

use std::sync::OnceLock;

use airdock::auth::token::{self, Access, Scope, TokenKey};
use airdock::auth::{htpasswd, parse_basic};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;

const SERVICE: &str = "airdock.test";

fn key() -> &'static TokenKey {
    static KEY: OnceLock<TokenKey> = OnceLock::new();
    KEY.get_or_init(|| TokenKey::random().expect("random key"))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(users) = htpasswd::parse(&text) {
        for (name, hash) in &users {
            assert!(!name.contains(':'));
            assert!(["$2y$", "$2a$", "$2b$"].iter().any(|p| hash.starts_with(p)));
        }
    }

    assert!(
        key().verify(&text, SERVICE).is_err(),
        "forged token verified"
    );

    for scope in Scope::parse_all(text.split('\n')) {
        let printed = format!("{}:{}:{}", scope.kind, scope.name, scope.actions.join(","));
        assert_eq!(Scope::parse(&printed), Some(scope), "{printed:?}");
    }

    if let Some((user, password)) = parse_basic(&text) {
        assert!(!user.contains(':'));
        let again = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        assert_eq!(parse_basic(&again), Some((user, password)));
    }

    // Sign claims made of the input's fields; they must verify to the same claims.
    let mut fields = text.split('\0');
    let sub = fields.next().unwrap_or_default();
    let access: Vec<Access> = fields
        .collect::<Vec<_>>()
        .chunks(3)
        .map(|c| Access {
            kind: c[0].to_owned(),
            name: c.get(1).copied().unwrap_or_default().to_owned(),
            actions: c
                .get(2)
                .map(|a| a.split(',').map(str::to_owned).collect())
                .unwrap_or_default(),
        })
        .collect();
    let claims = token::claims(sub, SERVICE, 300, access);
    let signed = key().sign(&claims);
    let back = key()
        .verify(&signed, SERVICE)
        .expect("our own token verifies");
    assert_eq!(back.sub, claims.sub);
    assert_eq!(back.access, claims.access);
    assert!(key().verify(&signed, "another.service").is_err());
});
