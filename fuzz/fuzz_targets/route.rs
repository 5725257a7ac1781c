//! The `/v2/...` path parser and the name, digest and reference parsers under it.
//!
//! Properties: parse → format → parse gives the same endpoint; every value that parses
//! (repository name, digest, reference, upload id) prints back as exactly the text it came
//! from, so what reaches the filesystem is what the client sent, never a normalised cousin.
//! The metrics' route class (`airdock::metrics::RouteClass`, decided from the path's shape
//! alone) agrees with the endpoint the dispatcher serves.
#![no_main]

use airdock::http::route::{self, Endpoint};
use airdock::metrics::RouteClass;
use airdock_storage::{Digest, Reference, RepoName, UploadId};
use libfuzzer_sys::fuzz_target;

/// The path after `/v2/` that names `e`.
fn format(e: &Endpoint) -> String {
    match e {
        Endpoint::Base => String::new(),
        Endpoint::Catalog => "_catalog".into(),
        Endpoint::Tags(r) => format!("{r}/tags/list"),
        Endpoint::Manifest(r, reference) => format!("{r}/manifests/{reference}"),
        Endpoint::Blob(r, d) => format!("{r}/blobs/{d}"),
        Endpoint::Uploads(r) => format!("{r}/blobs/uploads/"),
        Endpoint::Upload(r, id) => format!("{r}/blobs/uploads/{id}"),
        Endpoint::Referrers(r, d) => format!("{r}/referrers/{d}"),
    }
}

/// The `class` label of requests for `e`.
fn class(e: &Endpoint) -> RouteClass {
    match e {
        Endpoint::Base => RouteClass::Base,
        Endpoint::Catalog => RouteClass::Catalog,
        Endpoint::Tags(_) => RouteClass::Tags,
        Endpoint::Manifest(..) => RouteClass::Manifest,
        Endpoint::Blob(..) => RouteClass::Blob,
        Endpoint::Uploads(_) | Endpoint::Upload(..) => RouteClass::Upload,
        Endpoint::Referrers(..) => RouteClass::Referrers,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let shape = RouteClass::of(&format!("/v2/{s}"));
    if let Ok(e) = route::parse(s) {
        assert_eq!(shape, class(&e), "{s:?}");
        let text = format(&e);
        match route::parse(&text) {
            Ok(again) => assert_eq!(again, e, "{s:?} → {text:?}"),
            Err(err) => panic!("{s:?} parsed, its formatting {text:?} does not: {err:?}"),
        }
    }
    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.to_string(), s);
        assert_eq!(Digest::parse(&d.to_string()).ok(), Some(d));
    }
    if let Ok(n) = RepoName::parse(s) {
        assert_eq!(n.as_str(), s);
        assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
    }
    if let Ok(r) = Reference::parse(s) {
        assert_eq!(r.to_string(), s);
    }
    if let Ok(id) = UploadId::parse(s) {
        assert_eq!(id.as_str(), s);
    }
});
