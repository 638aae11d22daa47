//! What the load was promised (every 2xx, written down as it arrived) and
//! the arithmetic that holds it against what the system holds afterwards.
//!
//! Pure data: [`reconcile`] takes the ledger and an [`Observed`] snapshot
//! (read by `check` with SQL and the public API) and counts each promise
//! kept, lost or doubled. Kept apart from the I/O so the arithmetic has
//! unit tests that make it fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use uuid::Uuid;

/// One acknowledged webhook delivery, by `(source, delivery id)`.
#[derive(Debug, Clone, Default)]
pub struct DeliveryAck {
    /// The event ids the 200s named: more than one means the same
    /// delivery was stored as two events.
    pub event_ids: BTreeSet<Uuid>,
    /// Shopify `orders/create`: the order's external id, which must end as
    /// exactly one order.
    pub external_order: Option<String>,
    /// 200s with `"duplicate": true` (a redelivery absorbed).
    pub duplicates: u64,
    /// Injected on purpose to fail: expected `failed` and dead-lettered,
    /// not applied.
    pub poison: bool,
}

/// One acknowledged `POST /api/v1/orders`, by its `Idempotency-Key`.
#[derive(Debug, Clone, Default)]
pub struct OrderAck {
    /// The order ids the 201s named (a retry replays the first).
    pub order_ids: BTreeSet<Uuid>,
    /// 2xx answers past the first (client retries and resends).
    pub replays: u64,
}

/// Every 2xx of the run.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub deliveries: BTreeMap<(String, String), DeliveryAck>,
    pub orders: BTreeMap<String, OrderAck>,
    pub exports: BTreeSet<Uuid>,
}

impl Ledger {
    pub fn delivery(
        &mut self,
        source: &str,
        delivery_id: &str,
        event_id: Option<Uuid>,
        duplicate: bool,
    ) -> &mut DeliveryAck {
        let ack = self
            .deliveries
            .entry((source.to_owned(), delivery_id.to_owned()))
            .or_default();
        if let Some(id) = event_id {
            ack.event_ids.insert(id);
        }
        if duplicate {
            ack.duplicates += 1;
        }
        ack
    }

    pub fn order(&mut self, key: &str, order_id: Uuid) {
        let ack = self.orders.entry(key.to_owned()).or_default();
        if !ack.order_ids.insert(order_id) || ack.order_ids.len() > 1 {
            ack.replays += 1;
        }
    }

    pub fn acknowledged(&self) -> u64 {
        (self.deliveries.len() + self.orders.len() + self.exports.len()) as u64
    }
}

/// A stored webhook delivery as SQL sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredDelivery {
    /// Rows with this `(source, delivery_id)`.
    pub rows: u64,
    pub status: String,
}

/// An export as SQL and its file say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredExport {
    pub status: String,
    /// `Some(true)` when the stored checksum equals the file's SHA-256,
    /// `Some(false)` when not (or the file is missing); `None` unless
    /// succeeded.
    pub checksum_matches: Option<bool>,
}

/// What the system holds once it is quiet.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub deliveries: HashMap<(String, String), StoredDelivery>,
    /// Webhook orders by external id: how many rows carry it.
    pub webhook_orders: HashMap<String, u64>,
    /// Orders whose line carries the idempotency key's marker SKU.
    pub orders_by_key: HashMap<String, BTreeSet<Uuid>>,
    pub exports: HashMap<Uuid, StoredExport>,
    /// Domain events the store wrote vs the analytics raw events, per type
    /// (`order.created`, `webhook.received`): `(expected, stored)`.
    pub event_counts: BTreeMap<String, (u64, u64)>,
}

/// The verdict. `lost` and `doubled` list one line per broken promise.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub lost: Vec<String>,
    pub doubled: Vec<String>,
    /// Redeliveries and client retries answered without a second effect.
    pub duplicates_absorbed: u64,
    /// Exports not in a terminal state.
    pub exports_unfinished: Vec<String>,
    /// Succeeded exports whose checksum is not their file's.
    pub exports_bad_checksum: Vec<String>,
    /// Poison deliveries that were applied after all.
    pub poison_applied: Vec<String>,
}

const APPLIED: [&str; 2] = ["processed", "ignored"];
const TERMINAL: [&str; 3] = ["succeeded", "failed", "expired"];

/// Holds `ledger` against `observed`.
pub fn reconcile(ledger: &Ledger, observed: &Observed) -> Tally {
    let mut tally = Tally::default();
    for ((source, delivery_id), ack) in &ledger.deliveries {
        let name = format!("webhook {source}/{delivery_id}");
        tally.duplicates_absorbed += ack.duplicates;
        if ack.event_ids.len() > 1 {
            tally.doubled.push(format!(
                "{name}: acknowledged as {} different events",
                ack.event_ids.len()
            ));
        }
        let stored = observed
            .deliveries
            .get(&(source.clone(), delivery_id.clone()));
        match stored {
            None => tally.lost.push(format!("{name}: acknowledged, not stored")),
            Some(stored) if stored.rows > 1 => tally
                .doubled
                .push(format!("{name}: stored {} times", stored.rows)),
            Some(stored) if ack.poison => {
                if APPLIED.contains(&stored.status.as_str()) {
                    tally
                        .poison_applied
                        .push(format!("{name}: poison ended {}", stored.status));
                }
            }
            Some(stored) if !APPLIED.contains(&stored.status.as_str()) => tally.lost.push(format!(
                "{name}: stored, never applied (status {})",
                stored.status
            )),
            Some(_) => {}
        }
        if let Some(external) = ack.external_order.as_ref().filter(|_| !ack.poison) {
            match observed.webhook_orders.get(external).copied().unwrap_or(0) {
                0 => tally
                    .lost
                    .push(format!("{name}: order {external} never created")),
                1 => {}
                n => tally
                    .doubled
                    .push(format!("{name}: order {external} exists {n} times")),
            }
        }
    }
    for (key, ack) in &ledger.orders {
        let name = format!("order key {key}");
        tally.duplicates_absorbed += ack.replays;
        if ack.order_ids.len() > 1 {
            tally.doubled.push(format!(
                "{name}: answered with {} different orders",
                ack.order_ids.len()
            ));
        }
        let stored = observed.orders_by_key.get(key);
        match stored.map_or(0, BTreeSet::len) {
            0 => tally.lost.push(format!("{name}: acknowledged, no order")),
            1 => {
                let acknowledged_kept =
                    stored.is_some_and(|ids| ack.order_ids.iter().all(|id| ids.contains(id)));
                if !acknowledged_kept {
                    tally.lost.push(format!(
                        "{name}: the acknowledged order is gone (another stands in)"
                    ));
                }
            }
            n => tally.doubled.push(format!("{name}: {n} orders")),
        }
    }
    for id in &ledger.exports {
        match observed.exports.get(id) {
            None => tally
                .lost
                .push(format!("export {id}: acknowledged, not stored")),
            Some(export) => {
                if !TERMINAL.contains(&export.status.as_str()) {
                    tally
                        .exports_unfinished
                        .push(format!("export {id}: still {}", export.status));
                }
                if export.checksum_matches == Some(false) {
                    tally
                        .exports_bad_checksum
                        .push(format!("export {id}: stored sha256 is not its file's"));
                }
            }
        }
    }
    for (kind, (expected, stored)) in &observed.event_counts {
        if stored < expected {
            tally.lost.push(format!(
                "events {kind}: {} of {expected} never reached analytics",
                expected - stored
            ));
        } else if stored > expected {
            tally.doubled.push(format!(
                "events {kind}: analytics holds {stored} for {expected}"
            ));
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn stored(status: &str) -> StoredDelivery {
        StoredDelivery {
            rows: 1,
            status: status.to_owned(),
        }
    }

    /// A ledger of one delivery, one order and one export, and the
    /// observation in which every promise is kept.
    fn kept() -> (Ledger, Observed) {
        let mut ledger = Ledger::default();
        let event = Uuid::new_v4();
        ledger
            .delivery("shopify", "d-1", Some(event), false)
            .external_order = Some("42".into());
        ledger.delivery("shopify", "d-1", Some(event), true);
        let order = Uuid::new_v4();
        ledger.order("k-1", order);
        ledger.order("k-1", order);
        let export = Uuid::new_v4();
        ledger.exports.insert(export);

        let mut observed = Observed::default();
        observed
            .deliveries
            .insert(("shopify".into(), "d-1".into()), stored("processed"));
        observed.webhook_orders.insert("42".into(), 1);
        observed
            .orders_by_key
            .insert("k-1".into(), BTreeSet::from([order]));
        observed.exports.insert(
            export,
            StoredExport {
                status: "succeeded".into(),
                checksum_matches: Some(true),
            },
        );
        observed.event_counts.insert("order.created".into(), (2, 2));
        (ledger, observed)
    }

    #[test]
    fn every_promise_kept_counts_nothing_lost_or_doubled() {
        let (ledger, observed) = kept();
        let tally = reconcile(&ledger, &observed);
        assert!(tally.lost.is_empty(), "{:?}", tally.lost);
        assert!(tally.doubled.is_empty(), "{:?}", tally.doubled);
        // The redelivery and the order resend.
        assert_eq!(tally.duplicates_absorbed, 2);
    }

    #[test]
    fn an_acknowledged_delivery_not_stored_is_a_loss() {
        let (ledger, mut observed) = kept();
        observed.deliveries.clear();
        let tally = reconcile(&ledger, &observed);
        assert_eq!(tally.lost.len(), 1, "{:?}", tally.lost);
        assert!(tally.lost[0].contains("not stored"));
        assert!(tally.doubled.is_empty());
    }

    #[test]
    fn a_stored_delivery_never_applied_is_a_loss() {
        let (ledger, mut observed) = kept();
        observed
            .deliveries
            .insert(("shopify".into(), "d-1".into()), stored("received"));
        observed.webhook_orders.clear();
        let tally = reconcile(&ledger, &observed);
        assert_eq!(tally.lost.len(), 2, "{:?}", tally.lost);
    }

    #[test]
    fn two_orders_for_one_idempotency_key_are_a_double() {
        let (ledger, mut observed) = kept();
        observed
            .orders_by_key
            .get_mut("k-1")
            .unwrap()
            .insert(Uuid::new_v4());
        let tally = reconcile(&ledger, &observed);
        assert_eq!(tally.doubled.len(), 1, "{:?}", tally.doubled);
        assert!(tally.doubled[0].contains("2 orders"));
        assert!(tally.lost.is_empty());
    }

    #[test]
    fn a_key_answered_with_two_orders_is_a_double() {
        let (mut ledger, observed) = kept();
        ledger.order("k-1", Uuid::new_v4());
        let tally = reconcile(&ledger, &observed);
        assert!(
            tally
                .doubled
                .iter()
                .any(|d| d.contains("2 different orders")),
            "{:?}",
            tally.doubled
        );
    }

    #[test]
    fn a_webhook_order_created_twice_is_a_double() {
        let (ledger, mut observed) = kept();
        observed.webhook_orders.insert("42".into(), 2);
        let tally = reconcile(&ledger, &observed);
        assert_eq!(tally.doubled.len(), 1, "{:?}", tally.doubled);
    }

    #[test]
    fn events_missing_from_analytics_are_lost_and_extra_ones_doubled() {
        let (ledger, mut observed) = kept();
        observed.event_counts.insert("order.created".into(), (5, 3));
        observed
            .event_counts
            .insert("webhook.received".into(), (5, 6));
        let tally = reconcile(&ledger, &observed);
        assert_eq!(tally.lost.len(), 1, "{:?}", tally.lost);
        assert!(tally.lost[0].contains("2 of 5"));
        assert_eq!(tally.doubled.len(), 1, "{:?}", tally.doubled);
    }

    #[test]
    fn a_poison_delivery_failing_is_expected_and_applied_is_flagged() {
        let (mut ledger, mut observed) = kept();
        ledger
            .delivery("shopify", "poison", Some(Uuid::new_v4()), false)
            .poison = true;
        observed
            .deliveries
            .insert(("shopify".into(), "poison".into()), stored("failed"));
        let tally = reconcile(&ledger, &observed);
        assert!(tally.lost.is_empty(), "{:?}", tally.lost);
        observed
            .deliveries
            .insert(("shopify".into(), "poison".into()), stored("processed"));
        assert_eq!(reconcile(&ledger, &observed).poison_applied.len(), 1);
    }

    #[test]
    fn an_export_stuck_running_or_with_a_wrong_checksum_is_reported() {
        let (ledger, mut observed) = kept();
        let id = *ledger.exports.iter().next().unwrap();
        observed.exports.insert(
            id,
            StoredExport {
                status: "running".into(),
                checksum_matches: None,
            },
        );
        assert_eq!(reconcile(&ledger, &observed).exports_unfinished.len(), 1);
        observed.exports.insert(
            id,
            StoredExport {
                status: "succeeded".into(),
                checksum_matches: Some(false),
            },
        );
        assert_eq!(reconcile(&ledger, &observed).exports_bad_checksum.len(), 1);
    }
}
