//! The number catalog: services, the countries each service is sold in with a price list per
//! provider, and the operators of each country.
//!
//! Generated from the seed, so the same seed gives the same catalog. Stock moves: purchases take
//! one number, and a periodic drift adds or removes a few per provider.

use rand::{Rng, rngs::StdRng, seq::SliceRandom};
use serde_json::{Value, json};

use crate::clock::rupiah;

/// (code, name, icon slug) of every service sold.
const SERVICES: &[(u32, &str, &str)] = &[
    (13, "WhatsApp", "wa"),
    (4, "Telegram", "tg"),
    (7, "Facebook", "fb"),
    (1, "Google", "go"),
    (2, "Instagram", "ig"),
    (3, "TikTok", "tt"),
    (5, "Shopee", "sp"),
    (6, "Tokopedia", "tp"),
    (8, "Twitter", "tw"),
    (9, "Gojek", "gj"),
    (10, "Grab", "gr"),
    (11, "Discord", "dc"),
    (12, "LINE", "ln"),
    (14, "Signal", "sg"),
    (15, "WeChat", "wc"),
    (16, "Microsoft", "ms"),
    (17, "Amazon", "am"),
    (18, "Netflix", "nf"),
    (19, "Spotify", "sf"),
    (20, "DANA", "dn"),
    (21, "OVO", "ov"),
    (22, "Lazada", "lz"),
    (23, "Bukalapak", "bl"),
    (24, "Blibli", "bb"),
    (25, "Snapchat", "sc"),
    (26, "Viber", "vb"),
    (27, "Yahoo", "yh"),
    (28, "Steam", "st"),
    (29, "PayPal", "pp"),
    (30, "Any Other", "ot"),
];

/// (name, iso code, prefix, base price in rupiah, operators after "any").
const COUNTRIES: &[(&str, &str, &str, i64, &[&str])] = &[
    (
        "Indonesia",
        "id",
        "+62",
        1_000,
        &["telkomsel", "indosat", "xl", "tri", "smartfren"],
    ),
    (
        "Malaysia",
        "my",
        "+60",
        2_500,
        &["celcom", "digi", "maxis", "umobile"],
    ),
    (
        "Philippines",
        "ph",
        "+63",
        2_200,
        &["globe", "smart", "dito"],
    ),
    (
        "Vietnam",
        "vn",
        "+84",
        1_800,
        &["viettel", "vinaphone", "mobifone"],
    ),
    ("Thailand", "th", "+66", 3_000, &["ais", "dtac", "truemove"]),
    ("India", "in", "+91", 2_000, &["airtel", "jio", "vi"]),
    ("Brazil", "br", "+55", 3_500, &["claro", "tim", "vivo"]),
    (
        "United Kingdom",
        "gb",
        "+44",
        6_000,
        &["ee", "three", "vodafone"],
    ),
    (
        "Cambodia",
        "kh",
        "+855",
        2_800,
        &["cellcard", "smart", "metfone"],
    ),
];

/// Provider ids as the upstream spells them: strings of digits.
const PROVIDERS: &[&str] = &["3837", "1021", "2550", "4102", "5077"];

/// Upper bound of a provider's stock.
const MAX_STOCK: i64 = 500;

/// One service (an app whose verification SMS a number receives).
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub(crate) code: u32,
    pub(crate) name: &'static str,
    slug: &'static str,
}

/// A service sold in one country: the `number_id` clients order with.
#[derive(Debug, Clone)]
pub(crate) struct Offer {
    pub(crate) number_id: u64,
    pub(crate) service_code: u32,
    pub(crate) country: usize,
    pub(crate) providers: Vec<ProviderPrice>,
}

/// One provider's line in an offer's price list.
#[derive(Debug, Clone)]
pub(crate) struct ProviderPrice {
    pub(crate) provider_id: &'static str,
    server_id: u32,
    pub(crate) stock: i64,
    rate: f64,
    pub(crate) price: i64,
}

/// The whole number catalog.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    services: Vec<Service>,
    offers: Vec<Offer>,
}

impl Catalog {
    /// Generates the catalog from the world's random source.
    pub(crate) fn generate(rng: &mut StdRng) -> Self {
        let services: Vec<Service> = SERVICES
            .iter()
            .map(|&(code, name, slug)| Service { code, name, slug })
            .collect();
        let mut offers = Vec::new();
        let mut number_id = 340_000 + rng.random_range(0..400u64);
        for service in &services {
            for country in countries_for(rng) {
                number_id += rng.random_range(1..40u64);
                offers.push(make_offer(rng, number_id, service.code, country));
            }
        }
        Self { services, offers }
    }

    /// `/v2/services` data.
    pub(crate) fn services_view(&self) -> Value {
        let list: Vec<Value> = self.services.iter().map(service_view).collect();
        Value::Array(list)
    }

    /// The service with this code.
    pub(crate) fn service(&self, code: u32) -> Option<&Service> {
        self.services.iter().find(|s| s.code == code)
    }

    /// `/v2/countries` data for one service.
    pub(crate) fn countries_view(&self, service_code: u32) -> Value {
        let list: Vec<Value> = self
            .offers
            .iter()
            .filter(|o| o.service_code == service_code)
            .map(offer_view)
            .collect();
        Value::Array(list)
    }

    /// `/v2/operators` data for a country (by name, any case) and optionally a provider.
    pub(crate) fn operators_view(&self, country: &str, provider_id: Option<&str>) -> Option<Value> {
        let index = country_index(country)?;
        let list: Vec<Value> = operators_of(index, provider_id)
            .into_iter()
            .map(|(id, name)| operator_view(index, id, name))
            .collect();
        Some(Value::Array(list))
    }

    /// The offer with this `number_id`.
    pub(crate) fn offer_mut(&mut self, number_id: u64) -> Option<&mut Offer> {
        self.offers.iter_mut().find(|o| o.number_id == number_id)
    }

    /// Moves every provider's stock by a few numbers up or down.
    pub(crate) fn drift_stock(&mut self, rng: &mut StdRng) {
        for line in self.offers.iter_mut().flat_map(|o| o.providers.iter_mut()) {
            line.stock = (line.stock + rng.random_range(-4..=5)).clamp(0, MAX_STOCK);
        }
    }
}

impl Offer {
    /// Name of the offer's country.
    pub(crate) fn country_name(&self) -> &'static str {
        COUNTRIES[self.country].0
    }

    /// Phone prefix of the offer's country (`+62`).
    pub(crate) fn prefix(&self) -> &'static str {
        COUNTRIES[self.country].2
    }

    /// The operator name for `operator_id` as this provider sells it (1 is `any`).
    pub(crate) fn operator_name(
        &self,
        provider_id: &str,
        operator_id: u32,
    ) -> Option<&'static str> {
        operators_of(self.country, Some(provider_id))
            .into_iter()
            .find(|&(id, _)| id == operator_id)
            .map(|(_, name)| name)
    }
}

fn countries_for(rng: &mut StdRng) -> Vec<usize> {
    let mut others: Vec<usize> = (1..COUNTRIES.len()).collect();
    others.shuffle(rng);
    let extra = rng.random_range(2..=5);
    let mut chosen = vec![0];
    chosen.extend(others.into_iter().take(extra));
    chosen.sort_unstable();
    chosen
}

fn make_offer(rng: &mut StdRng, number_id: u64, service_code: u32, country: usize) -> Offer {
    let mut providers: Vec<&'static str> = PROVIDERS.to_vec();
    providers.shuffle(rng);
    let count = rng.random_range(2..=3);
    let base = COUNTRIES[country].3;
    let providers = providers
        .into_iter()
        .take(count)
        .map(|provider_id| ProviderPrice {
            provider_id,
            server_id: rng.random_range(1..=6),
            stock: if rng.random_bool(0.1) {
                0
            } else {
                rng.random_range(5..=300)
            },
            rate: f64::from(rng.random_range(550..=990u32)) / 10.0,
            price: (base + rng.random_range(0..=40) * 50).max(500),
        })
        .collect();
    Offer {
        number_id,
        service_code,
        country,
        providers,
    }
}

fn service_view(service: &Service) -> Value {
    json!({
        "service_code": service.code,
        "service_name": service.name,
        "service_img": format!("https://sim.invalid/apps/{}.png", service.slug),
    })
}

fn offer_view(offer: &Offer) -> Value {
    let (name, iso, prefix, _, _) = COUNTRIES[offer.country];
    let stock_total: i64 = offer.providers.iter().map(|p| p.stock).sum();
    let rate = offer.providers.iter().map(|p| p.rate).fold(0.0, f64::max);
    let pricelist: Vec<Value> = offer.providers.iter().map(price_view).collect();
    json!({
        "number_id": offer.number_id,
        "name": name,
        "img": format!("https://sim.invalid/flags/{iso}.png"),
        "prefix": prefix,
        "iso_code": iso,
        "rate": rate,
        "stock_total": stock_total,
        "pricelist": pricelist,
    })
}

fn price_view(line: &ProviderPrice) -> Value {
    json!({
        "provider_id": line.provider_id,
        "server_id": line.server_id,
        "stock": line.stock,
        "rate": line.rate,
        "price": line.price,
        "price_format": rupiah(line.price),
        "available": line.stock > 0,
    })
}

fn operator_view(country: usize, id: u32, name: &str) -> Value {
    let slug = COUNTRIES[country].0.to_lowercase().replace(' ', "-");
    json!({
        "id": id,
        "name": name,
        "image": format!("https://sim.invalid/carriers/{slug}/{name}.png"),
    })
}

fn country_index(name: &str) -> Option<usize> {
    let wanted = name.trim().replace(['-', '_'], " ");
    COUNTRIES
        .iter()
        .position(|c| c.0.eq_ignore_ascii_case(&wanted) || c.1.eq_ignore_ascii_case(&wanted))
}

/// Operators a provider sells in a country: `any` (id 1) and the country's carriers (ids from 2
/// in table order); providers whose id ends in an odd digit do not carry the last one.
fn operators_of(country: usize, provider_id: Option<&str>) -> Vec<(u32, &'static str)> {
    let carriers = COUNTRIES[country].4;
    let odd = provider_id
        .and_then(|p| p.chars().last())
        .and_then(|c| c.to_digit(10))
        .is_some_and(|d| d % 2 == 1);
    let carried = if odd {
        carriers.len() - 1
    } else {
        carriers.len()
    };
    let mut list = vec![(1, "any")];
    list.extend((0..carried).map(|i| (i as u32 + 2, carriers[i])));
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_service_is_sold_in_several_countries_by_several_providers() {
        let catalog = Catalog::generate(&mut StdRng::seed_from_u64(7));
        assert!(catalog.services.len() >= 24);
        for service in &catalog.services {
            let offers: Vec<&Offer> = catalog
                .offers
                .iter()
                .filter(|o| o.service_code == service.code)
                .collect();
            assert!(offers.len() >= 3, "{}", service.name);
            assert!(offers.iter().all(|o| o.providers.len() >= 2));
        }
    }

    #[test]
    fn same_seed_gives_the_same_catalog() {
        let a = Catalog::generate(&mut StdRng::seed_from_u64(3));
        let b = Catalog::generate(&mut StdRng::seed_from_u64(3));
        assert_eq!(a.countries_view(13), b.countries_view(13));
    }

    #[test]
    fn operator_one_is_any_and_country_names_match_in_any_case() {
        let catalog = Catalog::generate(&mut StdRng::seed_from_u64(7));
        let ops = catalog.operators_view("indonesia", Some("3837")).unwrap();
        assert_eq!(ops[0]["id"], 1);
        assert_eq!(ops[0]["name"], "any");
        assert!(catalog.operators_view("atlantis", None).is_none());
    }
}
