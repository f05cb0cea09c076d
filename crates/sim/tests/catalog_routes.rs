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

#[tokio::test]
async fn countries_list_prices_from_several_providers_per_country() {
    let h = Harness::quick().await;
    let countries = h.data("/v2/countries?service_id=13").await;
    let list = countries.as_array().unwrap();
    assert!(list.len() >= 3);
    assert_eq!(list[0]["name"], "Indonesia");
    assert_eq!(list[0]["prefix"], "+62");
    for country in list {
        let pricelist = country["pricelist"].as_array().unwrap();
        assert!(pricelist.len() >= 2, "{country}");
        let total: i64 = pricelist.iter().map(|p| p["stock"].as_i64().unwrap()).sum();
        assert_eq!(country["stock_total"], total);
        for line in pricelist {
            assert!(line["provider_id"].is_string());
            assert!(line["rate"].is_f64());
            assert!(line["price_format"].as_str().unwrap().starts_with("Rp"));
            assert_eq!(line["available"], line["stock"].as_i64().unwrap() > 0);
        }
    }
}

#[tokio::test]
async fn countries_need_a_known_service_id() {
    let h = Harness::quick().await;
    assert_eq!(h.refusal("/v2/countries", Some(KEY_A)).await.0, 400);
    let (status, message) = h
        .refusal("/v2/countries?service_id=99999", Some(KEY_A))
        .await;
    assert_eq!((status, message.as_str()), (400, "Invalid service_id"));
    let (status, _) = h.refusal("/v2/countries?service_id=abc", Some(KEY_A)).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn operators_start_with_any_and_accept_country_names_in_any_case() {
    let h = Harness::quick().await;
    let ops = h
        .data("/v2/operators?provider_id=3837&country=INDONESIA")
        .await;
    assert_eq!(ops[0]["id"], 1);
    assert_eq!(ops[0]["name"], "any");
    assert!(ops.as_array().unwrap().len() >= 3);
    let other_provider = h
        .data("/v2/operators?country=indonesia&provider_id=1020")
        .await;
    assert_ne!(ops, other_provider, "operators differ by provider");
    let (status, _) = h
        .refusal("/v2/operators?country=atlantis", Some(KEY_A))
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn h2h_catalog_routes_answer_without_a_key() {
    let h = Harness::quick().await;
    for path in [
        "/v1/h2h/product",
        "/v1/h2h/list/rekening",
        "/v1/h2h/list/username",
    ] {
        let response = h.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(!body["data"].as_array().unwrap().is_empty(), "{path}");
    }
    let products = h.data("/v1/h2h/product").await;
    let first = &products[0];
    for field in [
        "code", "name", "note", "type", "brand", "category", "img_url", "price",
    ] {
        assert!(!first[field].is_null(), "{field}");
    }
    assert!(first["price_info"]["price_original"].as_i64() > first["price"].as_i64());
}

#[tokio::test]
async fn account_checks_mask_names_and_flag_the_documented_invalid_pattern() {
    let h = Harness::quick().await;
    let check = |q: &'static str| h.get(q, None);
    let bank: Value = check("/v1/h2h/check/rekening?bank_code=dana&account_number=081100001234")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bank["data"]["status"], "valid");
    assert_eq!(bank["data"]["account_number"], "081100001234");
    assert!(bank["data"]["account_name"].as_str().unwrap().contains('*'));

    let game: Value = check("/v1/h2h/check/username?account_code=freefire&account_number=12349999")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(game["data"]["status"], "invalid");

    let (status, message) = h
        .refusal(
            "/v1/h2h/check/rekening?bank_code=nope&account_number=1",
            None,
        )
        .await;
    assert_eq!((status, message.as_str()), (400, "Invalid bank_code"));
    let (status, _) = h
        .refusal("/v1/h2h/check/username?account_code=ML", None)
        .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn balance_shows_the_profile_and_formatted_amount() {
    let h = Harness::quick().await;
    let profile = h.data("/v1/user/balance").await;
    assert_eq!(profile["balance"], 500_000);
    assert_eq!(profile["formated"], "Rp500.000");
    assert_eq!(profile["username"], "demo1");
    for field in ["first_name", "last_name", "email"] {
        assert!(profile[field].is_string(), "{field}");
    }
    let other = h.data_as("/v1/user/balance", common::KEY_B).await;
    assert_eq!(other["balance"], 250_000);
}

#[tokio::test]
async fn keyed_routes_refuse_a_missing_or_unknown_key_with_401_json() {
    let h = Harness::quick().await;
    for path in [
        "/v2/services",
        "/v2/countries?service_id=13",
        "/v1/user/balance",
        "/v2/orders?number_id=1&provider_id=1&operator_id=1",
        "/v1/orders/get_status?order_id=RO1",
        "/v1/deposit/create?amount=10000&payment_id=qris",
        "/v1/h2h/transaksi/status?transaksi_id=H2H1",
    ] {
        let missing = h.refusal(path, None).await;
        assert_eq!(missing, (401, "API key is required".to_string()), "{path}");
        let unknown = h.refusal(path, Some("demo-key-unknown")).await;
        assert_eq!(unknown, (401, "Invalid API key".to_string()), "{path}");
    }
}

#[tokio::test]
async fn unknown_paths_get_a_json_404_and_wrong_methods_a_json_405() {
    let h = Harness::quick().await;
    let (status, message) = h.refusal("/v9/nothing", Some(KEY_A)).await;
    assert_eq!((status, message.as_str()), (404, "Endpoint not found"));
    let url = format!("{}/v2/services", h.sim.base_url());
    let response = h
        .http
        .post(url)
        .header("x-apikey", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn query_parameters_tolerate_order_extras_empties_and_encoded_spaces() {
    let h = Harness::quick().await;
    let ops = h
        .data("/v2/operators?x=1&provider_id=3837&empty=&country=united+kingdom")
        .await;
    assert_eq!(ops[0]["name"], "any");
    let same = h
        .data("/v2/operators?country=United%20Kingdom&provider_id=3837")
        .await;
    assert_eq!(ops, same);
}
