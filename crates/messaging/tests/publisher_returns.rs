//! Pipelined publishing against a real RabbitMQ (`KEEL_TEST_AMQP_URL`): with
//! many confirms in flight, a returned (unroutable, mandatory) message is
//! blamed on itself and on nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use chrono::Utc;
use keel_contracts::jobs::JobQueue;
use keel_messaging::publisher::RoutedMessage;
use keel_messaging::{Error, OutgoingMessage, Publisher, Target};
use keel_testkit::broker::TestBroker;
use uuid::Uuid;

/// `count` mandatory jobs, every `every`-th with a routing key no queue
/// binds; returns the messages and which of them are unroutable.
fn mixed(test: &TestBroker, count: usize, every: usize) -> (Vec<RoutedMessage>, Vec<bool>) {
    let exchange = test.topology().exchange(Target::Jobs);
    (0..count)
        .map(|i| {
            let unroutable = i % every == every - 1;
            let routing_key = if unroutable {
                format!("nobody-binds-{i}")
            } else {
                JobQueue::Webhook.routing_key().to_owned()
            };
            let message = OutgoingMessage {
                id: Uuid::new_v4(),
                message_type: "test.mixed".to_owned(),
                body: br#"{"padding":"a body of a realistic size for a job envelope"}"#.to_vec(),
                headers: BTreeMap::new(),
                timestamp: Utc::now(),
                mandatory: true,
            };
            (
                RoutedMessage {
                    exchange: exchange.clone(),
                    routing_key,
                    message,
                },
                unroutable,
            )
        })
        .unzip()
}

/// Indexes whose result disagrees with whether the message was routable.
fn misattributed(results: &[Result<(), Error>], unroutable: &[bool]) -> Vec<usize> {
    results
        .iter()
        .zip(unroutable)
        .enumerate()
        .filter(|(_, (result, unroutable))| match result {
            Ok(()) => **unroutable,
            Err(Error::Unroutable { .. }) => !**unroutable,
            Err(error) => panic!("unexpected failure: {error}"),
        })
        .map(|(index, _)| index)
        .collect()
}

#[tokio::test]
async fn a_pipelined_group_blames_each_return_on_its_own_message_only() {
    let test = TestBroker::new().await;
    let publisher = Publisher::new(test.broker("returns"));
    for _ in 0..3 {
        let (messages, unroutable) = mixed(&test, 2_000, 3);
        let results = publisher.publish_pipelined(&messages).await;
        assert_eq!(results.len(), messages.len());
        let wrong = misattributed(&results, &unroutable);
        assert!(wrong.is_empty(), "{} messages misattributed", wrong.len());
    }
    test.cleanup().await;
}
