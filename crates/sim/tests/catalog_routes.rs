//! The read-only routes: catalog, PPOB lists, account checks and balance, with and without the
//! `/api` prefix, and the key rules.

mod common;

use common::{Harness, KEY_A};
use serde_json::Value;

#[tokio::test]
async fn services_are_served_with_and_without_the_api_prefix() {
    let h = Harness::quick().await;
    let with_prefix = h.data("/v2/services").await;
    let url = format!("{}//v2//services?search=wa", h.root());
    let plain: Value = h
        .http
        .get(url)
        .header("x-apikey", KEY_A)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(plain["data"], with_prefix);
    let list = with_prefix.as_array().unwrap();
    assert!(list.len() >= 24);
    assert!(
        list.iter()
            .any(|s| s["service_code"] == 13 && s["service_name"] == "WhatsApp")
    );
    assert!(
        list[0]["service_img"]
            .as_str()
            .unwrap()
            .starts_with("https://sim.invalid/")
    );
}
