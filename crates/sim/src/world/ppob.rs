//! The PPOB side of the catalog: products bought through h2h transactions, and the banks,
//! e-wallets and games whose account names can be checked.
//!
//! Static tables plus a deterministic fake-name generator for the checks. An account number
//! ending in `9999` is reported `invalid`, so bots can exercise their rejection path.

use serde_json::{Value, json};

/// (code, name, note, type, brand, category, price) of every product sold.
const PRODUCTS: &[(&str, &str, &str, &str, &str, &str, i64)] = &[
    (
        "D1",
        "Rp1.000",
        "Dana 1.000",
        "topup_saldo",
        "dana",
        "ewallet",
        1_500,
    ),
    (
        "D5",
        "Rp5.000",
        "Dana 5.000",
        "topup_saldo",
        "dana",
        "ewallet",
        5_600,
    ),
    (
        "DN10",
        "Rp10.000",
        "Dana 10.000",
        "topup_saldo",
        "dana",
        "ewallet",
        10_500,
    ),
    (
        "D100",
        "Rp100.000",
        "Dana 100.000",
        "topup_saldo",
        "dana",
        "ewallet",
        101_000,
    ),
    (
        "OV10",
        "Rp10.000",
        "OVO 10.000",
        "topup_saldo",
        "ovo",
        "ewallet",
        10_700,
    ),
    (
        "OV50",
        "Rp50.000",
        "OVO 50.000",
        "topup_saldo",
        "ovo",
        "ewallet",
        50_700,
    ),
    (
        "GP20",
        "Rp20.000",
        "GoPay 20.000",
        "topup_saldo",
        "gopay",
        "ewallet",
        20_600,
    ),
    (
        "TS5",
        "Rp5.000",
        "Pulsa Telkomsel 5.000",
        "pulsa",
        "telkomsel",
        "pulsa",
        5_900,
    ),
    (
        "TS10",
        "Rp10.000",
        "Pulsa Telkomsel 10.000",
        "pulsa",
        "telkomsel",
        "pulsa",
        10_800,
    ),
    (
        "IS10",
        "Rp10.000",
        "Pulsa Indosat 10.000",
        "pulsa",
        "indosat",
        "pulsa",
        10_900,
    ),
    (
        "XL10",
        "Rp10.000",
        "Pulsa XL 10.000",
        "pulsa",
        "xl",
        "pulsa",
        10_850,
    ),
    (
        "PLN20",
        "Rp20.000",
        "Token PLN 20.000",
        "token_listrik",
        "pln",
        "pln",
        20_900,
    ),
    (
        "PLN50",
        "Rp50.000",
        "Token PLN 50.000",
        "token_listrik",
        "pln",
        "pln",
        50_900,
    ),
    (
        "FF70",
        "70 Diamonds",
        "Free Fire 70 Diamonds",
        "game",
        "freefire",
        "games",
        9_500,
    ),
    (
        "ML86",
        "86 Diamonds",
        "Mobile Legends 86 Diamonds",
        "game",
        "mobilelegends",
        "games",
        21_000,
    ),
];

/// (id, code, name, type) of every bank and e-wallet that can be checked.
const BANKS: &[(u32, &str, &str, &str)] = &[
    (1, "bca", "BANK BCA", "bank"),
    (2, "bri", "BANK BRI", "bank"),
    (3, "dana", "DANA", "ewallet"),
    (4, "ovo", "OVO", "ewallet"),
    (5, "gopay", "GOPAY", "ewallet"),
    (6, "mandiri", "BANK MANDIRI", "bank"),
    (7, "bni", "BANK BNI", "bank"),
];

/// (id, code, name, type) of every game that can be checked.
const GAMES: &[(u32, &str, &str, &str)] = &[
    (1, "freefire", "Free Fire", "game"),
    (2, "mobilelegends", "Mobile Legends", "game"),
    (3, "ML", "Mobile Legends (short code)", "game"),
    (4, "pubgm", "PUBG Mobile", "game"),
    (5, "genshin", "Genshin Impact", "game"),
];

/// Syllables of the generated account holder names; none is a real person.
const SYLLABLES: &[&str] = &[
    "ka", "lo", "mi", "re", "ta", "su", "no", "vi", "de", "ra", "zu", "pe",
];

/// A product as a transaction carries it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Product {
    pub(crate) code: &'static str,
    name: &'static str,
    pub(crate) note: &'static str,
    kind: &'static str,
    brand: &'static str,
    category: &'static str,
    pub(crate) price: i64,
}

impl Product {
    /// Finds a product by its code (exact case).
    pub(crate) fn find(code: &str) -> Option<Product> {
        PRODUCTS.iter().find(|p| p.0 == code).map(
            |&(code, name, note, kind, brand, category, price)| Product {
                code,
                name,
                note,
                kind,
                brand,
                category,
                price,
            },
        )
    }

    /// The `product{}` object of transaction responses.
    pub(crate) fn summary(&self) -> Value {
        json!({
            "code": self.code,
            "name": self.name,
            "note": self.note,
            "type": self.kind,
            "brand": self.brand,
            "category": self.category,
        })
    }

    /// The face value in rupiah as a digit string (`"10000"`), for `tujuan_info.nominal`.
    pub(crate) fn nominal(&self) -> String {
        self.name.chars().filter(char::is_ascii_digit).collect()
    }
}

/// `/v1/h2h/product` data.
pub(crate) fn products_view() -> Value {
    let list: Vec<Value> = PRODUCTS
        .iter()
        .filter_map(|p| Product::find(p.0))
        .map(product_view)
        .collect();
    Value::Array(list)
}

fn product_view(product: Product) -> Value {
    let original = product.price + product.price / 100;
    let mut view = product.summary();
    view["img_url"] = json!(format!("https://sim.invalid/ppob/{}.png", product.brand));
    view["price"] = json!(product.price);
    view["price_info"] = json!({
        "price_original": original,
        "price_discount": product.price,
        "price_discount_percent": 1,
    });
    view
}

/// `/v1/h2h/list/rekening` data.
pub(crate) fn banks_view() -> Value {
    let list: Vec<Value> = BANKS
        .iter()
        .map(|&(id, code, name, kind)| {
            json!({ "id": id, "bank_code": code, "bank_name": name, "type": kind })
        })
        .collect();
    Value::Array(list)
}

/// `/v1/h2h/list/username` data.
pub(crate) fn games_view() -> Value {
    let list: Vec<Value> = GAMES
        .iter()
        .map(|&(id, code, name, kind)| {
            json!({ "id": id, "account_code": code, "account_name": name, "type": kind })
        })
        .collect();
    Value::Array(list)
}

/// Whether a bank code (any case) can be checked.
pub(crate) fn is_bank(code: &str) -> bool {
    BANKS.iter().any(|b| b.1.eq_ignore_ascii_case(code))
}

/// Whether a game code (any case) can be checked.
pub(crate) fn is_game(code: &str) -> bool {
    GAMES.iter().any(|g| g.1.eq_ignore_ascii_case(code))
}

/// The answer to an account check: a masked holder name, or `invalid` for numbers ending in
/// `9999`. `game` switches from a bank-style `JA** HA**` to a game nickname.
pub(crate) fn check_view(seed: u64, account_number: &str, game: bool) -> Value {
    let invalid = account_number.ends_with("9999");
    let name = if invalid {
        "-".to_string()
    } else if game {
        game_nickname(seed, account_number)
    } else {
        mask_name(&holder_name(seed, account_number))
    };
    json!({
        "status": if invalid { "invalid" } else { "valid" },
        "account_number": account_number,
        "account_name": name,
    })
}

/// A two-word fake name derived from the seed and the account number.
pub(crate) fn holder_name(seed: u64, account_number: &str) -> String {
    let mut hash = seed ^ 0x9E37_79B9_7F4A_7C15;
    for byte in account_number.bytes() {
        hash = hash.wrapping_mul(0x100_0000_01B3) ^ u64::from(byte);
    }
    let mut word = |n: usize| {
        let mut w = String::new();
        for _ in 0..n {
            w.push_str(SYLLABLES[(hash % SYLLABLES.len() as u64) as usize]);
            hash /= SYLLABLES.len() as u64;
        }
        w.to_uppercase()
    };
    let first = word(2);
    let last = word(3);
    format!("{first} {last}")
}

fn mask_name(name: &str) -> String {
    let words: Vec<String> = name
        .split(' ')
        .map(|w| {
            let shown: String = w.chars().take(2).collect();
            format!("{shown}{}", "*".repeat(w.chars().count().saturating_sub(2)))
        })
        .collect();
    words.join(" ")
}

fn game_nickname(seed: u64, account_number: &str) -> String {
    let name = holder_name(seed, account_number);
    let (first, last) = name.split_once(' ').unwrap_or((&name, ""));
    format!("{}^{}", capitalise(first), last)
}

fn capitalise(word: &str) -> String {
    let lower = word.to_lowercase();
    let mut chars = lower.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_checks_mask_all_but_two_letters_of_each_word() {
        let view = check_view(7, "081100001111", false);
        assert_eq!(view["status"], "valid");
        let name = view["account_name"].as_str().unwrap();
        assert!(name.contains("**"), "{name}");
        assert_eq!(check_view(7, "081100001111", false), view);
    }

    #[test]
    fn account_numbers_ending_in_four_nines_are_invalid() {
        let view = check_view(7, "08110000_9999", true);
        assert_eq!(view["status"], "invalid");
        assert_eq!(view["account_name"], "-");
    }
}
