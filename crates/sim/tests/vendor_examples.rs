//! The vendor page's example responses (fixtures/vendor-examples.json) parse into the same
//! field set, with the same JSON types, as the simulator's answer for the same endpoint. The
//! only extra fields the simulator may send are those shared/API.md documents clients reading.

mod common;

use common::{Harness, KEY_A};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// Fields the simulator sends beyond the vendor example, each documented in API.md.
fn documented_extras(endpoint: &str) -> &'static [&'static str] {
    match endpoint {
        "/v2/orders" => &["data.expires_in_minute"],
        _ => &[],
    }
}

/// Every field path (`data[].pricelist[].price`) with its JSON kind; array items merged.
fn field_set(value: &Value) -> BTreeMap<String, &'static str> {
    let mut fields = BTreeMap::new();
    collect(value, String::new(), &mut fields);
    fields
}

fn collect(value: &Value, path: String, fields: &mut BTreeMap<String, &'static str>) {
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(items) => {
            for item in items {
                collect(item, format!("{path}[]"), fields);
            }
            "array"
        }
        Value::Object(map) => {
            for (name, item) in map {
                let child = if path.is_empty() {
                    name.clone()
                } else {
                    format!("{path}.{name}")
                };
                collect(item, child, fields);
            }
            "object"
        }
    };
    if !path.is_empty() {
        fields.insert(path, kind);
    }
}

async fn simulator_answer(h: &Harness, endpoint: &str) -> Value {
    let path = match endpoint {
        "/v2/countries" => "/v2/countries?service_id=13".to_string(),
        "/v2/operators" => "/v2/operators?country=indonesia&provider_id=3837".to_string(),
        "/v1/h2h/check/rekening" => {
            "/v1/h2h/check/rekening?bank_code=dana&account_number=081100001234".to_string()
        }
        "/v1/h2h/check/username" => {
            "/v1/h2h/check/username?account_code=freefire&account_number=12345678".to_string()
        }
        "/v2/orders" => {
            let (number_id, provider_id, _) = h.available_offer(13).await;
            format!("/v2/orders?number_id={number_id}&provider_id={provider_id}&operator_id=1")
        }
        "/v1/h2h/transaksi/create" => "/v1/h2h/transaksi/create?id=D1&target=0811".to_string(),
        "/v1/h2h/transaksi/status" => {
            let created = h.data("/v1/h2h/transaksi/create?id=DN10&target=0811").await;
            let id = created["id"].as_str().unwrap().to_string();
            let body = json!({ "status": "success" });
            h.control("POST", &format!("transactions/{id}/settle"), Some(body))
                .await;
            format!("/v1/h2h/transaksi/status?transaksi_id={id}")
        }
        plain => plain.to_string(),
    };
    let data = h.data_as(&path, KEY_A).await;
    json!({ "success": true, "data": data })
}

#[tokio::test]
async fn vendor_examples_have_the_field_set_the_simulator_returns() {
    let fixture: Value =
        serde_json::from_str(include_str!("fixtures/vendor-examples.json")).unwrap();
    let h = Harness::quick().await;
    let examples = fixture["examples"].as_array().unwrap();
    assert_eq!(examples.len(), 12);

    for example in examples {
        let endpoint = example["endpoint"].as_str().unwrap();
        let vendor = field_set(&example["response"]);
        let simulator = field_set(&simulator_answer(&h, endpoint).await);
        for (field, kind) in &vendor {
            assert_eq!(simulator.get(field), Some(kind), "{endpoint}: {field}");
        }
        let extras: Vec<&str> = simulator
            .keys()
            .filter(|field| !vendor.contains_key(*field))
            .map(String::as_str)
            .collect();
        assert_eq!(
            extras,
            documented_extras(endpoint),
            "{endpoint}: undocumented extras"
        );
    }
}

/// Endpoints the vendor page shows no example for: the fields shared/API.md lists.
#[tokio::test]
async fn responses_without_a_vendor_example_carry_every_field_api_md_lists() {
    let h = Harness::quick().await;
    let order = h.buy_number(KEY_A).await;
    let id = order["order_id"].as_str().unwrap();
    let status = h
        .data(&format!("/v1/orders/get_status?order_id={id}"))
        .await;
    let v1 = h
        .data("/v1/deposit/create?amount=10000&payment_id=qris")
        .await;
    let v2 = h
        .data("/v2/deposit/create?amount=10000&payment_id=qris")
        .await;
    let expected: [(&Value, &[&str]); 3] = [
        (
            &status,
            &[
                "order_id",
                "phone_number",
                "service",
                "country",
                "status",
                "otp_code",
                "otp_msg",
                "created_at",
                "expires_at",
                "expired_at",
            ],
        ),
        (
            &v1,
            &[
                "id",
                "amount",
                "currency.total",
                "currency.fee",
                "currency.diterima",
                "expired",
                "qr",
            ],
        ),
        (
            &v2,
            &[
                "id",
                "status",
                "method",
                "total",
                "fee",
                "diterima",
                "currency.type",
                "currency.total",
                "currency.fee",
                "currency.diterima",
                "qr_string",
                "qr_image",
                "created_at",
                "expired_at",
                "created_at_ts",
                "expired_at_ts",
            ],
        ),
    ];
    for (data, fields) in expected {
        let present = field_set(data);
        for field in fields {
            assert!(present.contains_key(*field), "{field} missing in {data}");
        }
    }
}
