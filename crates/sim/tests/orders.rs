//! The order lifecycle: buying a number, the SMS, done, cancel, resend, expiry, refunds, and
//! that orders stay private to the key that made them.

mod common;

use common::{Harness, KEY_A, KEY_B, quick_config};
use otpgate_sim::{AccountSeed, SimConfig};
use serde_json::Value;
use std::time::Duration;
use tokio::time::sleep;

async fn status(h: &Harness, id: &str) -> Value {
    h.data(&format!("/v1/orders/get_status?order_id={id}"))
        .await
}

async fn set_status(h: &Harness, id: &str, action: &str) -> Result<Value, (u16, String)> {
    let path = format!("/v1/orders/set_status?order_id={id}&status={action}");
    let response = h.get(&path, Some(KEY_A)).await;
    let code = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    if code == 200 {
        Ok(body["data"].clone())
    } else {
        Err((code, body["error"]["message"].as_str().unwrap().to_string()))
    }
}

fn order_id(order: &Value) -> String {
    order["order_id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn buying_a_number_debits_the_price_and_takes_one_from_stock() {
    let h = Harness::quick().await;
    let (number_id, provider_id, price) = h.available_offer(13).await;
    let stock_before = provider_stock(&h, number_id, &provider_id).await;

    let query = format!(
        "/v2/orders?service_id=13&operator_id=&provider_id={provider_id}&number_id={number_id}"
    );
    let order = h.data(&query).await;
    assert!(order["order_id"].as_str().unwrap().starts_with("RO"));
    assert!(order["phone_number"].as_str().unwrap().contains(" 0000 "));
    assert_eq!(order["operator"], "any");
    assert_eq!(order["price"], price);
    assert!(order["price_formated"].as_str().unwrap().starts_with("Rp"));
    assert_eq!(order["expires_in_minute"], 1);
    let lifetime = order["expired_at"].as_u64().unwrap() - order["created_at"].as_u64().unwrap();
    assert_eq!(lifetime, 60_000);

    assert_eq!(h.sim.balance(KEY_A), Some(500_000 - price));
    assert_eq!(
        provider_stock(&h, number_id, &provider_id).await,
        stock_before - 1
    );
    assert_eq!(h.sim.stats().orders_created, 1);
}

async fn provider_stock(h: &Harness, number_id: u64, provider_id: &str) -> i64 {
    let countries = h.data("/v2/countries?service_id=13").await;
    let country = countries
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["number_id"] == number_id)
        .unwrap();
    let line = country["pricelist"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["provider_id"] == provider_id)
        .unwrap();
    line["stock"].as_i64().unwrap()
}

#[tokio::test]
async fn an_order_waits_then_receives_its_otp_then_completes_with_done() {
    let h = Harness::quick().await;
    let id = order_id(&h.buy_number(KEY_A).await);
    let waiting = status(&h, &id).await;
    assert_eq!(waiting["status"], "waiting");
    assert_eq!(waiting["otp_code"], "-");
    assert_eq!(waiting["expires_at"], waiting["expired_at"]);
    assert_eq!(set_status(&h, &id, "done").await.unwrap_err().0, 400);

    sleep(Duration::from_millis(250)).await;
    let received = status(&h, &id).await;
    assert_eq!(received["status"], "received");
    let code = received["otp_code"].as_str().unwrap();
    assert_eq!(code.len(), 6);
    assert!(code.chars().all(|c| c.is_ascii_digit()));
    assert!(received["otp_msg"].as_str().unwrap().contains(code));

    let done = set_status(&h, &id, "done").await.unwrap();
    assert_eq!(done["status"], "completed");
    assert_eq!(status(&h, &id).await["status"], "completed");
    assert_eq!(set_status(&h, &id, "cancel").await.unwrap_err().0, 400);
}

#[tokio::test]
async fn cancel_is_refused_early_then_refunds_and_reads_canceled() {
    let config = SimConfig {
        cancel_lock: Duration::from_millis(300),
        sms_delay: Duration::from_secs(30),
        ..quick_config()
    };
    let h = Harness::start(config).await;
    let id = order_id(&h.buy_number(KEY_A).await);
    let after_purchase = h.sim.balance(KEY_A).unwrap();

    let (code, message) = set_status(&h, &id, "cancel").await.unwrap_err();
    assert_eq!(code, 400);
    assert!(message.contains("canceled"), "{message}");

    sleep(Duration::from_millis(350)).await;
    let canceled = set_status(&h, &id, "cancel").await.unwrap();
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(h.sim.balance(KEY_A), Some(500_000));
    assert!(after_purchase < 500_000);
    assert_eq!(set_status(&h, &id, "cancel").await.unwrap_err().0, 400);
}

#[tokio::test]
async fn cancel_is_refused_once_an_otp_arrived() {
    let h = Harness::quick().await;
    let id = order_id(&h.buy_number(KEY_A).await);
    let (code, _) = h
        .control(
            "POST",
            &format!("orders/{id}/sms"),
            Some(serde_json::json!({"code": "123456"})),
        )
        .await;
    assert_eq!(code, 200);
    let received = status(&h, &id).await;
    assert_eq!(
        (received["status"].as_str(), received["otp_code"].as_str()),
        (Some("received"), Some("123456"))
    );
    let (code, message) = set_status(&h, &id, "cancel").await.unwrap_err();
    assert_eq!(code, 400);
    assert!(message.contains("OTP"), "{message}");
}

#[tokio::test]
async fn resend_waits_for_a_new_sms_on_the_same_number() {
    let h = Harness::quick().await;
    let order = h.buy_number(KEY_A).await;
    let id = order_id(&order);
    assert_eq!(set_status(&h, &id, "resend").await.unwrap_err().0, 400);
    h.control(
        "POST",
        &format!("orders/{id}/sms"),
        Some(serde_json::json!({"code": "111111"})),
    )
    .await;

    let resent = set_status(&h, &id, "resend").await.unwrap();
    assert_eq!(resent["status"], "waiting");
    assert_eq!(resent["otp_code"], "-");
    assert_eq!(resent["phone_number"], order["phone_number"]);
    sleep(Duration::from_millis(250)).await;
    let again = status(&h, &id).await;
    assert_eq!(again["status"], "received");
    assert_ne!(again["otp_code"], "-");
}

#[tokio::test]
async fn an_order_without_otp_goes_expiring_then_expired_with_refund() {
    let config = SimConfig {
        sms_delay: Duration::from_secs(60),
        order_lifetime: Duration::from_millis(600),
        expiring_window: Duration::from_millis(300),
        ..quick_config()
    };
    let h = Harness::start(config).await;
    let id = order_id(&h.buy_number(KEY_A).await);
    assert!(h.sim.balance(KEY_A).unwrap() < 500_000);
    assert_eq!(status(&h, &id).await["status"], "waiting");
    sleep(Duration::from_millis(400)).await;
    assert_eq!(status(&h, &id).await["status"], "expiring");
    sleep(Duration::from_millis(300)).await;
    assert_eq!(status(&h, &id).await["status"], "expired");
    assert_eq!(h.sim.balance(KEY_A), Some(500_000));
}

#[tokio::test]
async fn orders_are_invisible_to_other_keys() {
    let h = Harness::quick().await;
    let id = order_id(&h.buy_number(KEY_A).await);
    let path = format!("/v1/orders/get_status?order_id={id}");
    let (code, message) = h.refusal(&path, Some(KEY_B)).await;
    assert_eq!((code, message.as_str()), (404, "Order not found"));
    let cancel = format!("/v1/orders/set_status?order_id={id}&status=cancel");
    assert_eq!(h.refusal(&cancel, Some(KEY_B)).await.0, 404);
    let unknown = h
        .refusal("/v1/orders/get_status?order_id=RO0000000001", Some(KEY_A))
        .await;
    assert_eq!(unknown.0, 404);
}

#[tokio::test]
async fn insufficient_balance_and_bad_parameters_are_refused_with_400() {
    let config = SimConfig {
        accounts: vec![AccountSeed::new("demo-key-poor", 10, "poor")],
        ..quick_config()
    };
    let h = Harness::start(config).await;
    let countries = h
        .data_as("/v2/countries?service_id=13", "demo-key-poor")
        .await;
    let number_id = countries[0]["number_id"].as_u64().unwrap();
    let provider = countries[0]["pricelist"][0]["provider_id"]
        .as_str()
        .unwrap()
        .to_string();

    let query = format!("/v2/orders?number_id={number_id}&provider_id={provider}&operator_id=1");
    let (code, message) = h.refusal(&query, Some("demo-key-poor")).await;
    assert_eq!((code, message.as_str()), (400, "Insufficient balance"));
    for bad in [
        "/v2/orders?provider_id=3837&operator_id=1".to_string(),
        format!("/v2/orders?number_id=1&provider_id={provider}&operator_id=1"),
        format!("/v2/orders?number_id={number_id}&provider_id=9999&operator_id=1"),
        format!("/v2/orders?number_id={number_id}&provider_id={provider}&operator_id=77"),
        "/v1/orders/set_status?order_id=RO1&status=explode".to_string(),
        "/v1/orders/get_status".to_string(),
    ] {
        assert_eq!(h.refusal(&bad, Some("demo-key-poor")).await.0, 400, "{bad}");
    }
    assert_eq!(h.sim.stats().orders_created, 0);
}

#[tokio::test]
async fn a_provider_out_of_stock_refuses_the_order() {
    let h = Harness::quick().await;
    let services = h.data("/v2/services").await;
    for service in services.as_array().unwrap() {
        let code = service["service_code"].as_u64().unwrap();
        let countries = h.data(&format!("/v2/countries?service_id={code}")).await;
        for country in countries.as_array().unwrap() {
            for line in country["pricelist"].as_array().unwrap() {
                if line["stock"] == 0 {
                    assert_eq!(line["available"], false);
                    let query = format!(
                        "/v2/orders?number_id={}&provider_id={}&operator_id=1",
                        country["number_id"],
                        line["provider_id"].as_str().unwrap()
                    );
                    let (status, message) = h.refusal(&query, Some(KEY_A)).await;
                    assert_eq!(status, 400);
                    assert!(message.contains("Stock"), "{message}");
                    return;
                }
            }
        }
    }
    panic!("the seeded catalog has no provider out of stock");
}
