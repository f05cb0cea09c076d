//! Deposits (v1 and v2 sharing one store) and h2h transactions: their shapes, lifecycles,
//! limits and refunds.

mod common;

use common::{Harness, KEY_A, KEY_B, quick_config};
use otpgate_sim::SimConfig;
use serde_json::Value;
use std::time::Duration;
use tokio::time::sleep;

fn is_jakarta_datetime(value: &Value) -> bool {
    let text = value.as_str().unwrap_or("");
    text.len() == 19 && &text[4..5] == "-" && &text[10..11] == " " && !text.contains('Z')
}

#[tokio::test]
async fn v1_deposit_create_returns_a_qr_data_url_and_fee_breakdown() {
    let h = Harness::quick().await;
    let deposit = h
        .data("/v1/deposit/create?amount=50000&payment_id=qris")
        .await;
    assert!(deposit["id"].as_str().unwrap().starts_with("RO"));
    assert_eq!(deposit["amount"], 50_000);
    let currency = &deposit["currency"];
    assert_eq!(currency["diterima"], 50_000);
    assert_eq!(
        currency["total"].as_i64().unwrap(),
        50_000 + currency["fee"].as_i64().unwrap()
    );
    assert!(deposit["expired"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(
        deposit["qr"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,")
    );
    assert_eq!(h.sim.stats().deposits_created, 1);
}

#[tokio::test]
async fn v2_deposit_create_returns_the_full_payment_shape() {
    let h = Harness::quick().await;
    let deposit = h
        .data("/v2/deposit/create?payment_id=qris&amount=20000")
        .await;
    assert_eq!(deposit["status"], "pending");
    assert_eq!(deposit["method"], "qris");
    assert_eq!(deposit["diterima"], 20_000);
    assert_eq!(deposit["currency"]["total"], deposit["total"]);
    assert!(deposit["qr_string"].as_str().unwrap().starts_with("000201"));
    assert!(
        deposit["qr_image"]
            .as_str()
            .unwrap()
            .starts_with("https://sim.invalid/")
    );
    assert!(is_jakarta_datetime(&deposit["created_at"]));
    assert!(is_jakarta_datetime(&deposit["expired_at"]));
    assert!(deposit["expired_at_ts"].as_u64() > deposit["created_at_ts"].as_u64());
}

#[tokio::test]
async fn v1_and_v2_read_the_same_deposits_and_payment_credits_the_balance() {
    let h = Harness::quick().await;
    let created = h
        .data("/v1/deposit/create?amount=30000&payment_id=qris")
        .await;
    let id = created["id"].as_str().unwrap();
    let v2 = h
        .data(&format!("/v2/deposit/get_status?deposit_id={id}"))
        .await;
    assert_eq!(v2["status"], "pending");
    let v1 = h
        .data(&format!("/v1/deposit/get_status?deposit_id={id}"))
        .await;
    assert_eq!(v1["status"], "pending");

    let (code, _) = h.control("POST", &format!("deposits/{id}/pay"), None).await;
    assert_eq!(code, 200);
    assert_eq!(h.sim.balance(KEY_A), Some(530_000));
    let v1 = h
        .data(&format!("/v1/deposit/get_status?deposit_id={id}"))
        .await;
    assert_eq!(v1["status"], "success");
    let (code, _) = h.control("POST", &format!("deposits/{id}/pay"), None).await;
    assert_eq!(code, 400, "a deposit is paid once");
}

#[tokio::test]
async fn a_fourth_pending_deposit_is_refused_until_one_is_cancelled() {
    let h = Harness::quick().await;
    let mut ids = Vec::new();
    for version in ["v1", "v2", "v1"] {
        let path = format!("/{version}/deposit/create?amount=10000&payment_id=qris");
        ids.push(h.data(&path).await["id"].as_str().unwrap().to_string());
    }
    let fourth = "/v2/deposit/create?amount=10000&payment_id=qris";
    let (code, message) = h.refusal(fourth, Some(KEY_A)).await;
    assert_eq!(code, 400);
    assert!(message.contains('3'), "{message}");
    let other_key = h.data_as(fourth, KEY_B).await;
    assert_eq!(other_key["status"], "pending", "the limit is per account");

    let cancel = h
        .data(&format!("/v1/deposit/cancel?deposit_id={}", ids[0]))
        .await;
    assert_eq!(cancel["status"], "cancel");
    let status = h
        .data(&format!("/v2/deposit/get_status?deposit_id={}", ids[0]))
        .await;
    assert_eq!(status["status"], "cancel");
    h.data(fourth).await;
    let again = format!("/v1/deposit/cancel?deposit_id={}", ids[0]);
    assert_eq!(h.refusal(&again, Some(KEY_A)).await.0, 400);
}

#[tokio::test]
async fn an_unpaid_deposit_expires_and_no_longer_counts_as_pending() {
    let config = SimConfig {
        deposit_lifetime: Duration::from_millis(200),
        ..quick_config()
    };
    let h = Harness::start(config).await;
    let deposit = h
        .data("/v2/deposit/create?amount=10000&payment_id=usdt-trc-20")
        .await;
    let id = deposit["id"].as_str().unwrap();
    sleep(Duration::from_millis(250)).await;
    let status = h
        .data(&format!("/v1/deposit/get_status?deposit_id={id}"))
        .await;
    assert_eq!(status["status"], "expired");
    let (code, _) = h.control("POST", &format!("deposits/{id}/pay"), None).await;
    assert_eq!(code, 400);
    assert_eq!(h.sim.balance(KEY_A), Some(500_000));
}

#[tokio::test]
async fn deposits_refuse_bad_parameters_and_other_keys() {
    let h = Harness::quick().await;
    for bad in [
        "/v1/deposit/create?amount=10000&payment_id=paypal",
        "/v1/deposit/create?payment_id=qris",
        "/v2/deposit/create?amount=abc&payment_id=qris",
        "/v2/deposit/create?amount=5&payment_id=qris",
        "/v1/deposit/get_status",
    ] {
        assert_eq!(h.refusal(bad, Some(KEY_A)).await.0, 400, "{bad}");
    }
    let deposit = h
        .data("/v1/deposit/create?amount=10000.00&payment_id=QRIS")
        .await;
    let id = deposit["id"].as_str().unwrap();
    let status = format!("/v2/deposit/get_status?deposit_id={id}");
    assert_eq!(
        h.refusal(&status, Some(KEY_B)).await,
        (404, "Deposit not found".into())
    );
    let cancel = format!("/v1/deposit/cancel?deposit_id={id}");
    assert_eq!(h.refusal(&cancel, Some(KEY_B)).await.0, 404);
}

#[tokio::test]
async fn an_h2h_transaction_processes_then_succeeds_with_a_serial_number() {
    let h = Harness::quick().await;
    let created = h
        .data("/v1/h2h/transaksi/create?id=DN10&target=081100001234")
        .await;
    assert!(created["id"].as_str().unwrap().starts_with("H2H"));
    assert_eq!(created["status"], "processing");
    assert_eq!(created["product"]["code"], "DN10");
    assert_eq!(created["tujuan"], "081100001234");
    assert_eq!(created["sisa_balance"], 500_000 - 10_500);
    assert!(created["message"].is_string());
    let id = created["id"].as_str().unwrap();

    let path = format!("/v1/h2h/transaksi/status?transaksi_id={id}");
    let processing = h.data(&path).await;
    assert_eq!(processing["status"], "processing");
    sleep(Duration::from_millis(250)).await;
    let done = h.data(&path).await;
    assert_eq!(done["status"], "success");
    assert_eq!(done["refund"], false);
    assert_eq!(done["price"], 10_500);
    assert!(!done["response"]["sn"].as_str().unwrap().is_empty());
    assert_eq!(done["response"]["status"], "sukses");
    assert!(done["finish_at"].as_u64() >= done["created_at"].as_u64());
    assert_eq!(h.sim.balance(KEY_A), Some(500_000 - 10_500));
    assert_eq!(h.sim.stats().transactions_created, 1);
}

#[tokio::test]
async fn a_target_ending_in_0000_fails_and_is_refunded() {
    let h = Harness::quick().await;
    let url = format!(
        "{}/v1/h2h/transaksi/create?id=TS10&target=081200000000",
        h.sim.base_url()
    );
    let response = h
        .http
        .post(url)
        .header("x-apikey", KEY_A)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "POST is accepted too");
    let created: Value = response.json().await.unwrap();
    let id = created["data"]["id"].as_str().unwrap();
    sleep(Duration::from_millis(250)).await;
    let failed = h
        .data(&format!("/v1/h2h/transaksi/status?transaksi_id={id}"))
        .await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["refund"], true);
    assert_eq!(h.sim.balance(KEY_A), Some(500_000));
}

#[tokio::test]
async fn transactions_settle_on_demand_and_stay_private() {
    let config = SimConfig {
        h2h_settle: Duration::from_secs(60),
        ..quick_config()
    };
    let h = Harness::start(config).await;
    let created = h
        .data("/v1/h2h/transaksi/create?id=FF70&target=12345678")
        .await;
    let id = created["id"].as_str().unwrap();
    let path = format!("/v1/h2h/transaksi/status?transaksi_id={id}");
    assert_eq!(
        h.refusal(&path, Some(KEY_B)).await,
        (404, "Transaction not found".into())
    );

    let body = serde_json::json!({ "status": "failed" });
    let (code, settled) = h
        .control("POST", &format!("transactions/{id}/settle"), Some(body))
        .await;
    assert_eq!(code, 200);
    assert_eq!(settled["data"]["status"], "failed");
    assert_eq!(h.data(&path).await["refund"], true);
    let body = serde_json::json!({ "status": "success" });
    let (code, _) = h
        .control("POST", &format!("transactions/{id}/settle"), Some(body))
        .await;
    assert_eq!(code, 400, "a final transaction stays final");

    assert_eq!(
        h.refusal("/v1/h2h/transaksi/create?id=NOPE&target=1", Some(KEY_A))
            .await
            .0,
        400
    );
    assert_eq!(
        h.refusal("/v1/h2h/transaksi/create?id=FF70", Some(KEY_A))
            .await
            .0,
        400
    );
}
