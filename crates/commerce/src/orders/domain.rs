//! Order types. Inputs are validated once, at construction (`parse()`), so
//! the queries can trust every value they are given.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One rejected input value: the field's path (e.g. `items[2].quantity`)
/// and what is wrong with it, written for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: String,
    pub message: String,
}

impl Invalid {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Where an order is in its life.
///
/// `pending → paid → fulfilled`, and `cancelled` from `pending` or `paid`.
/// `fulfilled` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    Pending,
    Paid,
    Fulfilled,
    Cancelled,
}

/// A status change the state machine does not allow, whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an order cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

/// A status change the state machine allows but a customer may not make:
/// `paid` and `fulfilled` come from the payment and fulfilment webhooks or
/// an admin, and a paid order is cancelled by an admin (it needs a refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub struct ForbiddenTransition {
    pub from: OrderStatus,
    pub to: OrderStatus,
}

impl std::fmt::Display for ForbiddenTransition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("customers may only cancel their own pending order; ")?;
        match self.to {
            OrderStatus::Cancelled => write!(
                f,
                "this one is {}, and only an admin can cancel it",
                self.from
            ),
            to => write!(
                f,
                "{to} is set by the payment and fulfilment webhooks or an admin"
            ),
        }
    }
}

/// Why a status change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// Nobody may make it (HTTP 409).
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    /// Someone may, but not a customer (HTTP 403).
    #[error(transparent)]
    Forbidden(#[from] ForbiddenTransition),
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 4] = [
        OrderStatus::Pending,
        OrderStatus::Paid,
        OrderStatus::Fulfilled,
        OrderStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilled => "fulfilled",
            OrderStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == value)
            .ok_or_else(|| "must be one of pending, paid, fulfilled, cancelled".to_owned())
    }

    /// Checks `self → to`. Staying in the same status is not a transition
    /// and is refused too: a client asking for it has a stale view.
    pub fn transition_to(self, to: OrderStatus) -> Result<OrderStatus, IllegalTransition> {
        use OrderStatus::*;
        match (self, to) {
            (Pending, Paid) | (Paid, Fulfilled) | (Pending | Paid, Cancelled) => Ok(to),
            _ => Err(IllegalTransition { from: self, to }),
        }
    }

    /// Checks `self → to` asked for by the order's owner, a customer: only
    /// `pending → cancelled` is theirs. What nobody may do stays an
    /// [`IllegalTransition`]; what only an admin or a webhook may do is a
    /// [`ForbiddenTransition`]. A status other than `cancelled` is
    /// forbidden whatever the current one, so the answer does not depend on
    /// the order's state.
    pub fn customer_transition_to(self, to: OrderStatus) -> Result<OrderStatus, TransitionError> {
        let forbidden = ForbiddenTransition { from: self, to };
        if to != OrderStatus::Cancelled {
            return Err(forbidden.into());
        }
        self.transition_to(to)?;
        if self != OrderStatus::Pending {
            return Err(forbidden.into());
        }
        Ok(to)
    }
}

impl std::fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Active ISO 4217 currency codes (2024 list, funds and metals excluded).
/// Shipped with the code so validation needs no network or database.
pub const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT",
    "BGN", "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD",
    "CDF", "CHF", "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD",
    "EGP", "ERN", "ETB", "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ",
    "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD",
    "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR",
    "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR",
    "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN",
    "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR",
    "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB",
    "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS",
    "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW",
    "ZWG",
];

/// An ISO 4217 code from [`ISO_4217`], three uppercase letters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency(String);

impl Currency {
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.len() != 3 || !value.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err("must be an ISO 4217 code: three uppercase letters".to_owned());
        }
        if ISO_4217.binary_search(&value).is_err() {
            return Err("is not an ISO 4217 currency code".to_owned());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A stock-keeping unit: 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku(String);

impl Sku {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters", Self::MAX_LEN));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("may contain only letters, digits, '.', '_' and '-'".to_owned());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Units of one line: 1 to 10 000.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity(i32);

impl Quantity {
    pub const MAX: i64 = 10_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        if !(1..=Self::MAX).contains(&value) {
            return Err(format!("must be between 1 and {}", Self::MAX));
        }
        // In range, so it fits.
        Ok(Self(value as i32))
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

/// Price of one unit in minor units: 0 to 10^9 (ten million in a
/// two-decimal currency), which keeps any order total far inside `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnitPriceCents(i64);

impl UnitPriceCents {
    pub const MAX: i64 = 1_000_000_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        if !(0..=Self::MAX).contains(&value) {
            return Err(format!("must be between 0 and {}", Self::MAX));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A plausible e-mail address: one `@`, a non-empty local part, a dotted
/// domain, no whitespace, at most 254 characters. Deliverability is not
/// something a syntax check can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(value: &str) -> Result<Self, String> {
        let message = || "is not an email address".to_owned();
        if value.len() > 254 || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(message());
        }
        let (local, domain) = value.split_once('@').ok_or_else(message)?;
        let domain_ok = !domain.contains('@')
            && domain.contains('.')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || !domain_ok {
            return Err(message());
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The sender's own reference for an order: unique per customer for API
/// orders, per source for webhook orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalId(String);

impl ExternalId {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() || value.len() > Self::MAX_LEN || value.chars().any(char::is_control) {
            return Err(format!(
                "must be 1 to {} characters without control characters",
                Self::MAX_LEN
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Where the seller's fulfilment of an order stands, as its shop reports
/// it: 1 to 32 characters of `a-z` and `_` (`unfulfilled`, `pending`,
/// `fulfilled`). Recorded, not a transition of [`OrderStatus`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FulfillmentStatus(String);

impl FulfillmentStatus {
    pub const MAX_LEN: usize = 32;

    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty()
            || value.len() > Self::MAX_LEN
            || !value.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
        {
            return Err(format!(
                "must be 1 to {} characters of a-z and '_'",
                Self::MAX_LEN
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One validated line of a new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewItem {
    pub sku: Sku,
    pub quantity: Quantity,
    pub unit_price_cents: UnitPriceCents,
}

/// Where an order came from: the API, or a webhook source (`webhook:<name>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Api,
    Webhook(String),
}

impl Source {
    pub fn as_string(&self) -> String {
        match self {
            Source::Api => "api".to_owned(),
            Source::Webhook(name) => format!("webhook:{name}"),
        }
    }
}

/// A validated order, ready to insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub currency: Currency,
    pub items: Vec<NewItem>,
    pub external_id: Option<ExternalId>,
    pub customer_email: Option<Email>,
    /// The owner; `None` for webhook orders with no Keel user.
    pub user_id: Option<Uuid>,
    pub source: Source,
}

/// An order as a third party (a webhook source) describes it: validated,
/// keyed by the sender's own id, with the sender's total (Shopify's
/// `total_price` includes tax, shipping and discounts, so it is not the sum
/// of the lines). Applied with [`super::queries::upsert_external`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalOrder {
    /// `webhook:<source name>`.
    pub source: Source,
    pub external_id: ExternalId,
    pub currency: Currency,
    pub items: Vec<NewItem>,
    pub total_cents: TotalCents,
    pub customer_email: Option<Email>,
}

/// A payment a provider confirmed: what it collected, in minor units of
/// `currency` as Keel counts them (the exponent of ISO 4217). Marks an
/// order paid only when both match the order ([`super::queries::mark_paid`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    pub amount_cents: i64,
    pub currency: Currency,
}

/// An order total in minor units: 0 to 10^15 (the largest total an API
/// order can reach), so sums and conversions stay far inside `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TotalCents(i64);

impl TotalCents {
    pub const MAX: i64 = 1_000_000_000_000_000;

    pub fn parse(value: i64) -> Result<Self, String> {
        if !(0..=Self::MAX).contains(&value) {
            return Err(format!("must be between 0 and {}", Self::MAX));
        }
        Ok(Self(value))
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// The unvalidated shape of a new order as a client sends it. Documented
/// (as `NewOrder`) with the limits [`NewOrder::parse`] enforces.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::ToSchema),
    schema(as = NewOrder, description = "A new order, owned by the caller.")
)]
pub struct RawNewOrder {
    /// ISO 4217, e.g. `EUR`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$"))]
    pub currency: String,
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Vec<OrderItem>, min_items = 1, max_items = 100)
    )]
    pub items: Vec<RawItem>,
    /// Your own reference; unique among your orders (409 when reused).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(nullable = false, min_length = 1, max_length = 255)
    )]
    pub external_id: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(nullable = false, format = Email))]
    pub customer_email: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RawItem {
    pub sku: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
}

impl NewOrder {
    pub const MAX_ITEMS: usize = 100;

    /// Validates every field and reports *all* problems at once, each with
    /// its path, so a client fixes its request in one round.
    pub fn parse(
        raw: RawNewOrder,
        user_id: Option<Uuid>,
        source: Source,
    ) -> Result<Self, Vec<Invalid>> {
        let mut errors = Vec::new();
        let currency = check(
            &mut errors,
            "currency".into(),
            Currency::parse(&raw.currency),
        );
        // Absent optional fields are fine (`Some(None)`); present ones must
        // be valid (`None` marks a failure).
        let external_id = match raw.external_id.as_deref() {
            None => Some(None),
            Some(v) => check(&mut errors, "external_id".into(), ExternalId::parse(v)).map(Some),
        };
        let customer_email = match raw.customer_email.as_deref() {
            None => Some(None),
            Some(v) => check(&mut errors, "customer_email".into(), Email::parse(v)).map(Some),
        };
        let count = raw.items.len();
        let count_ok = check(
            &mut errors,
            "items".into(),
            if (1..=Self::MAX_ITEMS).contains(&count) {
                Ok(())
            } else {
                Err(format!("must hold 1 to {} items", Self::MAX_ITEMS))
            },
        );
        let mut items = Vec::with_capacity(count.min(Self::MAX_ITEMS));
        for (i, item) in raw.items.iter().enumerate().take(Self::MAX_ITEMS) {
            let sku = check(
                &mut errors,
                format!("items[{i}].sku"),
                Sku::parse(&item.sku),
            );
            let quantity = check(
                &mut errors,
                format!("items[{i}].quantity"),
                Quantity::parse(item.quantity),
            );
            let price = check(
                &mut errors,
                format!("items[{i}].unit_price_cents"),
                UnitPriceCents::parse(item.unit_price_cents),
            );
            if let (Some(sku), Some(quantity), Some(unit_price_cents)) = (sku, quantity, price) {
                items.push(NewItem {
                    sku,
                    quantity,
                    unit_price_cents,
                });
            }
        }
        match (currency, external_id, customer_email, count_ok) {
            (Some(currency), Some(external_id), Some(customer_email), Some(()))
                if errors.is_empty() =>
            {
                Ok(NewOrder {
                    currency,
                    items,
                    external_id,
                    customer_email,
                    user_id,
                    source,
                })
            }
            _ => Err(errors),
        }
    }

    /// The sum of quantity × unit price. Bounded by the newtypes' limits
    /// (100 × 10^4 × 10^9 = 10^15), so it cannot overflow.
    pub fn total_cents(&self) -> i64 {
        self.items
            .iter()
            .map(|i| i64::from(i.quantity.get()) * i.unit_price_cents.get())
            .sum()
    }
}

/// Records a failed check under `field`; `Some(value)` when it passed.
fn check<T>(errors: &mut Vec<Invalid>, field: String, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(message) => {
            errors.push(Invalid::new(field, message));
            None
        }
    }
}

/// One line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OrderItem {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")
    )]
    pub sku: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub quantity: i32,
    /// Minor units of `currency`.
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000_i64))]
    pub unit_price_cents: i64,
}

/// A stored order: exactly the API's JSON shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Order {
    pub id: Uuid,
    pub external_id: Option<String>,
    pub status: OrderStatus,
    /// ISO 4217.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$"))]
    pub currency: String,
    pub total_cents: i64,
    pub items: Vec<OrderItem>,
    pub customer_email: Option<String>,
    pub user_id: Option<Uuid>,
    /// `api` or `webhook:<source>`.
    pub source: String,
    /// The shop's fulfilment status of a webhook order (`unfulfilled`,
    /// `pending`, `fulfilled`), recorded by the worker from the shop's API;
    /// `null` when unknown (API orders, or no shop API configured).
    // Absent from entries cached before the field existed, hence `default`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z_]{1,32}$"))]
    pub fulfillment_status: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Order {
    /// The order as the `order.created` / `order.updated` events carry it.
    pub fn snapshot(&self) -> keel_contracts::events::OrderSnapshot {
        keel_contracts::events::OrderSnapshot {
            order_id: self.id,
            user_id: self.user_id,
            status: self.status.as_str().to_owned(),
            currency: self.currency.clone(),
            total_cents: self.total_cents,
            source: self.source.clone(),
        }
    }

    /// Who may see this order: its owner, or an admin.
    pub fn visible_to(&self, scope: Scope) -> bool {
        match scope {
            Scope::All => true,
            Scope::User(user) => self.user_id == Some(user),
        }
    }
}

/// Whose orders a query may touch. A customer's scope makes other people's
/// orders indistinguishable from missing ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Admins and internal callers (the worker).
    All,
    /// A customer: their own orders only, and in status changes only what
    /// [`OrderStatus::customer_transition_to`] allows.
    User(Uuid),
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_state_machine_allows_exactly_the_documented_transitions() {
        use OrderStatus::*;
        let allowed = [
            (Pending, Paid),
            (Paid, Fulfilled),
            (Pending, Cancelled),
            (Paid, Cancelled),
        ];
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let ok = from.transition_to(to).is_ok();
                assert_eq!(ok, allowed.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_customer_may_only_cancel_a_pending_order() {
        use OrderStatus::*;
        for from in OrderStatus::ALL {
            for to in OrderStatus::ALL {
                let answer = from.customer_transition_to(to);
                let expected = match (from, to) {
                    (Pending, Cancelled) => Ok(Cancelled),
                    // Legal for an admin, not for a customer.
                    (Paid, Cancelled) => Err(ForbiddenTransition { from, to }.into()),
                    // Illegal for anybody.
                    (_, Cancelled) => Err(IllegalTransition { from, to }.into()),
                    _ => Err(ForbiddenTransition { from, to }.into()),
                };
                assert_eq!(answer, expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_forbidden_transition_says_what_a_customer_may_do() {
        let paid = ForbiddenTransition {
            from: OrderStatus::Pending,
            to: OrderStatus::Paid,
        };
        assert_eq!(
            paid.to_string(),
            "customers may only cancel their own pending order; paid is set by the payment and fulfilment webhooks or an admin"
        );
        let cancel = ForbiddenTransition {
            from: OrderStatus::Paid,
            to: OrderStatus::Cancelled,
        };
        assert_eq!(
            cancel.to_string(),
            "customers may only cancel their own pending order; this one is paid, and only an admin can cancel it"
        );
    }

    #[test]
    fn the_currency_list_is_sorted_so_binary_search_works() {
        assert!(ISO_4217.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn currencies_must_be_listed_uppercase_codes() {
        assert!(Currency::parse("EUR").is_ok());
        assert!(Currency::parse("eur").is_err());
        assert!(Currency::parse("EURO").is_err());
        assert!(Currency::parse("ABC").is_err());
    }

    #[test]
    fn emails_need_a_local_part_and_a_dotted_domain() {
        assert!(Email::parse("a@example.com").is_ok());
        for bad in [
            "",
            "a",
            "@example.com",
            "a@example",
            "a@@example.com",
            "a b@x.io",
            "a@x..io",
            "a\u{0}@x.io",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_invalid_field_is_reported_with_its_path() {
        let raw = RawNewOrder {
            currency: "xx".into(),
            items: vec![
                RawItem {
                    sku: "ok-1".into(),
                    quantity: 1,
                    unit_price_cents: 100,
                },
                RawItem {
                    sku: "bad sku".into(),
                    quantity: 0,
                    unit_price_cents: -1,
                },
            ],
            external_id: None,
            customer_email: Some("nope".into()),
        };
        let errors = NewOrder::parse(raw, None, Source::Api).unwrap_err();
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "currency",
                "customer_email",
                "items[1].sku",
                "items[1].quantity",
                "items[1].unit_price_cents"
            ]
        );
    }

    #[test]
    fn fulfillment_statuses_are_short_lowercase_words() {
        assert!(FulfillmentStatus::parse("unfulfilled").is_ok());
        assert!(FulfillmentStatus::parse("in_progress").is_ok());
        for bad in ["", "Fulfilled", "in progress", "x".repeat(33).as_str()] {
            assert!(FulfillmentStatus::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_order_needs_one_to_a_hundred_items() {
        let item = RawItem {
            sku: "a".into(),
            quantity: 1,
            unit_price_cents: 1,
        };
        let order = |n| RawNewOrder {
            currency: "USD".into(),
            items: vec![item.clone(); n],
            ..Default::default()
        };
        assert!(NewOrder::parse(order(0), None, Source::Api).is_err());
        assert!(NewOrder::parse(order(101), None, Source::Api).is_err());
        let ok = NewOrder::parse(order(100), None, Source::Api).unwrap();
        assert_eq!(ok.total_cents(), 100);
    }
}
