//! Issue #18 on the real local broker: 20,000 reservations through ONE product (Reserve, then
//! Release or Commit, 20,000 order ids, 1,000 buyers of one sale). The stock app keeps
//! committing to the end, and the product's value in its changelog (`stock-products-changelog`)
//! stays under 2 KB all along. Before the reservations had keys of their own the value grew by
//! ~93 bytes per reservation (1.9 MB here, twice Kafka's maximum record size).

mod common;

use std::time::{Duration, Instant};

use common::*;
use pickple_processors::stock::keys::{self, Entry};
use pickple_processors::App;
use pickple_schemas::{SaleTerms, StockCommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

const PRODUCT: &str = "hot-product";
const ORDERS: usize = 20_000;
const BUYERS: usize = 1_000;
const MAX_VALUE_BYTES: usize = 2_048;

/// What the changelog says so far.
#[derive(Debug, Default)]
struct Changelog {
    product_records: usize,
    largest: usize,
    last: Option<serde_json::Value>,
    reservations: usize,
    buyers: usize,
    expiries: usize,
}

fn changelog_consumer(p: &Pipeline) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("group.id", format!("{}changelog-reader", p.prefix))
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for partition in 0..pickple_topics::PARTITIONS {
        tpl.add_partition_offset(
            &p.topic("stock-products-changelog"),
            partition,
            Offset::Beginning,
        )
        .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    consumer
}

impl Changelog {
    fn read(&mut self, consumer: &BaseConsumer) {
        while let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            let Some(value) = m.payload() else { continue };
            match keys::parse(m.key().unwrap_or_default()) {
                Some(Entry::Product(PRODUCT)) => {
                    self.product_records += 1;
                    self.largest = self.largest.max(value.len());
                    assert!(
                        value.len() <= MAX_VALUE_BYTES,
                        "the product's value reached {} bytes after {} records",
                        value.len(),
                        self.product_records
                    );
                    self.last = Some(serde_json::from_slice(value).unwrap());
                }
                Some(Entry::Reservation { .. }) => self.reservations += 1,
                Some(Entry::Buyer { .. }) => self.buyers += 1,
                Some(Entry::Expiry { .. }) => self.expiries += 1,
                _ => {}
            }
        }
    }

    fn version(&self) -> u64 {
        self.last
            .as_ref()
            .and_then(|v| v["version"].as_u64())
            .unwrap_or(0)
    }
}

#[test]
fn twenty_thousand_reservations_keep_the_product_value_small() {
    let started = Instant::now();
    let p = Pipeline::start("stockstate", &config(300_000), &[App::Stock]).unwrap();
    let consumer = changelog_consumer(&p);
    let now = pickple_runtime::now_millis();
    let setup = [
        StockCommand::CreateProduct {
            product_id: PRODUCT.into(),
            vendor_id: "v1".into(),
            name: "Best seller".into(),
            description: "sells well".into(),
            price: 1000,
            image_url: None,
            public: true,
        },
        StockCommand::SetStock {
            product_id: PRODUCT.into(),
            quantity: ORDERS as u64,
        },
        StockCommand::OpenSale {
            product_id: PRODUCT.into(),
            sale: SaleTerms {
                opens_at: now - 60_000,
                closes_at: now + 3_600_000,
                quantity: ORDERS as u64,
                per_user_limit: 20,
            },
        },
    ];
    for cmd in &setup {
        p.send("stock-commands", PRODUCT, cmd, None);
    }
    // One producer, one partition: the commands arrive in this order, Reserve before its
    // Release or Commit.
    for i in 0..ORDERS {
        let order_id = format!("order-{i:05}");
        p.send(
            "stock-commands",
            PRODUCT,
            &StockCommand::Reserve {
                product_id: PRODUCT.into(),
                order_id: order_id.clone(),
                username: format!("buyer{:04}", i % BUYERS),
                quantity: 1,
                placed_at: now,
            },
            None,
        );
        let finish = if i % 2 == 0 {
            StockCommand::Release {
                product_id: PRODUCT.into(),
                order_id,
            }
        } else {
            StockCommand::Commit {
                product_id: PRODUCT.into(),
                order_id,
            }
        };
        p.send("stock-commands", PRODUCT, &finish, None);
    }
    p.flush();
    let sent = started.elapsed();

    // Every command changes the product: the last version is the number of commands.
    let last_version = (setup.len() + 2 * ORDERS) as u64;
    let mut log = Changelog::default();
    let deadline = Instant::now() + Duration::from_secs(90);
    while log.version() < last_version {
        assert!(
            Instant::now() < deadline,
            "the stock app stopped at version {} of {last_version}: {log:?}",
            log.version()
        );
        log.read(&consumer);
        let seen = p.seen.lock().unwrap();
        assert!(
            seen.records("stock-dlq").is_empty(),
            "dead letters: {:?}",
            &seen.records("stock-dlq")[..1]
        );
    }
    let done = started.elapsed();
    let last = log.last.clone().unwrap();
    eprintln!(
        "{ORDERS} reservations: commands sent after {sent:?}, last version in the changelog after \
         {done:?}; {} product records, largest {} bytes, last {} bytes; {} reservation, {} buyer, \
         {} expiry records",
        log.product_records,
        log.largest,
        serde_json::to_vec(&last).unwrap().len(),
        log.reservations,
        log.buyers,
        log.expiries
    );
    let stock = &last["state"]["stock"];
    let half = (ORDERS / 2) as i64;
    assert_eq!(stock["added"], ORDERS as i64);
    assert_eq!(stock["available"], half);
    assert_eq!(stock["reserved"], 0);
    assert_eq!(stock["sold"], half);
    assert_eq!(last["state"]["sale"]["taken"], half);
    assert!(log.largest <= MAX_VALUE_BYTES);
    // The entries went to keys of their own (the changelog keeps one record per key and
    // transaction, so there are fewer records than writes).
    assert!(log.reservations >= ORDERS, "{log:?}");
    assert!(log.buyers >= BUYERS / 2, "{log:?}");

    p.wait_for(30, "the last product view", |s| {
        s.get("view-products", PRODUCT)
            .is_some_and(|v| v["version"] == last_version)
    });
    let view = p.view("view-products", PRODUCT).unwrap();
    assert_eq!(view["stock"], *stock);
    p.stop();
    eprintln!("stock state test took {:?}", started.elapsed());
}
