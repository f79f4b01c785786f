//! The attachment endpoints against a real server, request by request: sizes and the quota,
//! uploads at the wrong offset or in broken parts, ranges, and other people's blobs. Each refusal
//! has its documented code, changes nothing, and someone outside a chat gets the very answer a
//! missing blob gets.

use anytime_proto::http::SessionResponse;
use anytime_proto::limits::BLOB_PART_BYTES;
use serde_json::{json, Value};

use crate::support::*;

struct Http {
    base: String,
    http: reqwest::Client,
}

impl Http {
    /// (status, JSON body or the raw bytes as a JSON string of their length).
    async fn call(&self, who: &SessionResponse, method: reqwest::Method, path: &str, body: Body) -> (u16, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&who.token);
        request = match body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Bytes(bytes) => request.body(bytes),
            Body::Range(range) => request.header("range", range),
        };
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let bytes = response.bytes().await.expect("a body");
        let value = serde_json::from_slice(&bytes).unwrap_or_else(|_| json!(bytes.len()));
        (status, value)
    }
}

enum Body {
    None,
    Json(Value),
    Bytes(Vec<u8>),
    Range(&'static str),
}

use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_blob_requests_get_their_code_and_change_nothing() {
    let part = BLOB_PART_BYTES;
    let h = Harness::start_with(&[
        "--blob-bytes-max",
        &(3 * part).to_string(),
        "--blob-quota-bytes",
        &(5 * part).to_string(),
    ]);
    let alice = h.register("alice").await;
    let bob = h.register("bob").await;
    let carol = h.register("carol").await;
    let mut client = h.connect(&alice).await;
    let conv = create_direct(&mut client, bob.user_id).await;
    let api = Http { base: h.base(), http: reqwest::Client::new() };
    let new = |size: u64| Body::Json(json!({"conv": conv, "size": size}));

    // Sizes, membership and the quota.
    let (status, body) = api.call(&alice, Method::POST, "/v1/blobs", new(3 * part + 1)).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("payload_too_large")));
    let (status, body) = api.call(&alice, Method::POST, "/v1/blobs", new(0)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("invalid_argument")));
    let (status, body) = api.call(&carol, Method::POST, "/v1/blobs", new(10)).await;
    assert_eq!((status, body["code"].as_str()), (400, Some("conversation_not_found")), "not her chat");
    let (status, first) = api.call(&alice, Method::POST, "/v1/blobs", new(2 * part + 10)).await;
    assert_eq!(status, 201, "{first}");
    let (status, _) = api.call(&alice, Method::POST, "/v1/blobs", new(2 * part)).await;
    assert_eq!(status, 201);
    let (status, body) = api.call(&alice, Method::POST, "/v1/blobs", new(part)).await;
    assert_eq!((status, body["code"].as_str()), (507, Some("quota_exceeded")), "5 parts in, 1 more is over");
    let (status, _) = api.call(&bob, Method::POST, "/v1/blobs", new(part)).await;
    assert_eq!(status, 201, "bob's quota is his own");

    let id = first["id"].as_str().expect("id").to_owned();
    let at = |offset: u64| format!("/v1/blobs/{id}?offset={offset}");
    let before = h.snapshot();
    // Uploads that break the rules.
    // (what, who, path, body, status, code)
    type Row<'a> = (&'a str, &'a SessionResponse, String, Vec<u8>, u16, &'a str);
    let rows: Vec<Row> = vec![
        ("not at the blob's offset", &alice, at(part), vec![1; part as usize], 409, "offset_mismatch"),
        ("not whole parts", &alice, at(0), vec![1; 100], 400, "invalid_argument"),
        ("past the end", &alice, at(0), vec![1; (3 * part) as usize], 413, "payload_too_large"),
        ("empty", &alice, at(0), Vec::new(), 400, "invalid_argument"),
        ("bob's upload into alice's blob", &bob, at(0), vec![1; part as usize], 404, "blob_not_found"),
        ("carol's", &carol, at(0), vec![1; part as usize], 404, "blob_not_found"),
        ("no such blob", &alice, format!("/v1/blobs/{}?offset=0", "ab".repeat(16)), vec![1; 10], 404, "blob_not_found"),
        ("not an id", &alice, "/v1/blobs/zz?offset=0".into(), vec![1; 10], 404, "blob_not_found"),
    ];
    for (name, who, path, bytes, want_status, want_code) in rows {
        let (status, body) = api.call(who, Method::PUT, &path, Body::Bytes(bytes)).await;
        assert_eq!((status, body["code"].as_str()), (want_status, Some(want_code)), "{name}: {body}");
    }
    let (status, body) = api.call(&bob, Method::GET, &format!("/v1/blobs/{id}"), Body::None).await;
    assert_eq!((status, body["code"].as_str()), (409, Some("blob_incomplete")), "a member, before it is complete");
    assert_eq!(h.snapshot(), before, "no refused request changed the database");

    // Upload it properly, in two requests; the status says where to resume.
    let mut sealed: Vec<u8> = (0..2 * part + 10).map(|i| (i % 253) as u8).collect();
    sealed[0] = 0xee;
    let (status, body) = api.call(&alice, Method::PUT, &at(0), Body::Bytes(sealed[..part as usize].to_vec())).await;
    assert_eq!((status, body["received"].as_u64()), (200, Some(part)));
    let (_, status_body) = api.call(&alice, Method::GET, &format!("/v1/blobs/{id}/status"), Body::None).await;
    assert_eq!(status_body["received"], part);
    let (status, _) = api.call(&bob, Method::GET, &format!("/v1/blobs/{id}/status"), Body::None).await;
    assert_eq!(status, 404, "only the uploading device asks how far it got");
    let rest = sealed[part as usize..].to_vec();
    let (status, body) = api.call(&alice, Method::PUT, &at(part), Body::Bytes(rest.clone())).await;
    assert_eq!((status, body["received"].as_u64()), (200, Some(2 * part + 10)));
    let (status, _) = api.call(&alice, Method::PUT, &at(part), Body::Bytes(rest)).await;
    assert_eq!(status, 200, "the last request again (its answer was lost) is answered, not an error");

    // Downloads: members only, whole or in ranges.
    let whole = api.http.get(format!("{}/v1/blobs/{id}", api.base)).bearer_auth(&bob.token).send().await.expect("get");
    assert_eq!(whole.status().as_u16(), 200);
    assert_eq!(whole.bytes().await.expect("body").to_vec(), sealed);
    let ranged = api
        .http
        .get(format!("{}/v1/blobs/{id}", api.base))
        .bearer_auth(&bob.token)
        .header("range", format!("bytes={}-", part - 2))
        .send()
        .await
        .expect("get");
    assert_eq!(ranged.status().as_u16(), 206);
    assert_eq!(
        ranged.headers().get("content-range").and_then(|v| v.to_str().ok()),
        Some(format!("bytes {}-{}/{}", part - 2, 2 * part + 9, 2 * part + 10).as_str())
    );
    assert_eq!(ranged.bytes().await.expect("body").to_vec(), sealed[(part - 2) as usize..]);
    let (status, _) = api.call(&bob, Method::GET, &format!("/v1/blobs/{id}"), Body::Range("bytes=999999999-")).await;
    assert_eq!(status, 416);
    let missing = api.call(&carol, Method::GET, &format!("/v1/blobs/{}", "cd".repeat(16)), Body::None).await;
    let hers = api.call(&carol, Method::GET, &format!("/v1/blobs/{id}"), Body::None).await;
    assert_eq!(hers, missing, "a blob of someone else's chat answers exactly as a missing one");
    assert_eq!(hers.0, 404);
    let (status, _) = api.call(&carol, Method::POST, &format!("/v1/blobs/{id}/fetched"), Body::None).await;
    assert_eq!(status, 404);
    client.close().await;
}
