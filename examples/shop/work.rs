//! The reference profile's work (`SHOP_PROFILE=reference`): what a typical service does per
//! request besides its telemetry. The orders service prices an order against a catalog of a few
//! thousand products in SQLite (three queries: the item's category, its best lines, related
//! products in the order's price band), applies discounts,
//! tax and shipping, and answers the order as a few kilobytes of JSON; the frontend reads that
//! order and answers a checkout page's JSON (summary, lines, recommendations). About 8 million
//! instructions per request across both services, half a millisecond of CPU or more.

#![allow(dead_code)] // each service uses its own half

use std::cell::RefCell;

use serde::{Deserialize, Serialize};

/// Products in the catalog, and the categories they fall in.
const PRODUCTS: u32 = 6_000;
const CATEGORIES: u32 = 40;
/// Lines an order holds: the best-rated in-stock products of the item's category.
const ORDER_LINES: u32 = 24;

/// Deterministic numbers, so every connection holds the same catalog.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

fn seeded() -> rusqlite::Connection {
    let connection = rusqlite::Connection::open_in_memory().expect("sqlite");
    connection
        .execute_batch(
            "CREATE TABLE products (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, name TEXT NOT NULL, category INTEGER NOT NULL, \
             price_cents INTEGER NOT NULL, stock INTEGER NOT NULL, weight_g INTEGER NOT NULL, rating REAL NOT NULL)",
        )
        .expect("schema");
    let transaction = connection.unchecked_transaction().expect("transaction");
    {
        let mut insert = transaction.prepare("INSERT INTO products VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)").expect("insert");
        for id in 0..PRODUCTS {
            let r = mix(u64::from(id));
            insert
                .execute(rusqlite::params![
                    id,
                    format!("SKU-{:06}", r % 1_000_000),
                    format!("{} {} no. {id}", ["Classic", "Pro", "Lite", "Max", "Eco"][(r >> 20) as usize % 5], ["kettle", "lamp", "chair", "mug", "desk", "shelf"][(r >> 24) as usize % 6]),
                    ((r >> 8) % u64::from(CATEGORIES)) as i64,
                    (199 + (r >> 12) % 25_000) as i64,
                    ((r >> 28) % 60) as i64,
                    (50 + (r >> 36) % 9_000) as i64,
                    1.0 + ((r >> 44) % 400) as f64 / 100.0,
                ])
                .expect("insert product");
        }
    }
    transaction.commit().expect("commit");
    connection
}

thread_local! {
    /// One connection per worker thread (an in-memory database each, seeded alike), as a pool
    /// would hand each request its own.
    static CATALOG: RefCell<Option<rusqlite::Connection>> = const { RefCell::new(None) };
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Line {
    pub product_id: u32,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
    pub weight_g: i64,
    pub rating: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Related {
    pub product_id: u32,
    pub name: String,
    pub price_cents: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub category: u32,
    pub category_products: i64,
    pub category_average_price_cents: f64,
    pub lines: Vec<Line>,
    /// Products of other categories in the price band of the order's average line.
    pub related: Vec<Related>,
    pub subtotal_cents: i64,
    pub discount_cents: i64,
    pub tax_cents: i64,
    pub shipping_cents: i64,
    pub total_cents: i64,
    pub loyalty_points: i64,
}

/// Prices the order for `item`: the catalog queries, then discounts, tax and shipping.
pub fn price_order(order_id: String, item: &str) -> Order {
    let seed = item.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    let category = (mix(seed) % u64::from(CATEGORIES)) as u32;
    let (category_products, category_average_price_cents, mut lines, related) = CATALOG.with(|catalog| {
        let mut catalog = catalog.borrow_mut();
        let connection = catalog.get_or_insert_with(seeded);
        let _query = tracing::info_span!(
            "SELECT products",
            otel.kind = "client",
            db.system.name = "sqlite",
            db.operation.name = "SELECT",
            db.collection.name = "products",
            db.query.summary = "SELECT products",
        )
        .entered();
        let (count, average): (i64, f64) = connection
            .prepare_cached("SELECT COUNT(*), AVG(price_cents) FROM products WHERE category = ?1")
            .expect("statement")
            .query_row([category], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("category summary");
        let mut statement = connection
            .prepare_cached("SELECT id, sku, name, price_cents, weight_g, rating FROM products WHERE category = ?1 AND stock > 0 ORDER BY rating DESC, price_cents LIMIT ?2")
            .expect("statement");
        let lines: Vec<Line> = statement
            .query_map([category, ORDER_LINES], |row| {
                let product_id: u32 = row.get(0)?;
                let unit_price_cents: i64 = row.get(3)?;
                let quantity = 1 + (mix(seed ^ u64::from(product_id)) % 4) as u32;
                Ok(Line {
                    product_id,
                    sku: row.get(1)?,
                    name: row.get(2)?,
                    quantity,
                    unit_price_cents,
                    line_total_cents: unit_price_cents * i64::from(quantity),
                    weight_g: row.get::<_, i64>(4)? * i64::from(quantity),
                    rating: row.get(5)?,
                })
            })
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let band = lines.iter().map(|l| l.unit_price_cents).sum::<i64>() / (lines.len().max(1) as i64);
        let related: Vec<Related> = connection
            .prepare_cached("SELECT id, name, price_cents FROM products WHERE category <> ?1 AND price_cents BETWEEN ?2 AND ?3 AND stock > 0 ORDER BY rating DESC LIMIT 8")
            .expect("statement")
            .query_map(rusqlite::params![category, band * 9 / 10, band * 11 / 10], |row| Ok(Related { product_id: row.get(0)?, name: row.get(1)?, price_cents: row.get(2)? }))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        (count, average, lines, related)
    });
    // Business logic: volume discounts per line, an order-level tier, tax, shipping by weight.
    for line in &mut lines {
        if line.quantity >= 3 {
            line.line_total_cents -= line.line_total_cents * 5 / 100;
        }
    }
    let subtotal_cents: i64 = lines.iter().map(|l| l.line_total_cents).sum();
    let discount_cents = match subtotal_cents {
        s if s >= 500_000 => s * 10 / 100,
        s if s >= 200_000 => s * 5 / 100,
        _ => 0,
    };
    let taxable = subtotal_cents - discount_cents;
    let tax_cents = (taxable as f64 * 0.0825).round() as i64;
    let weight_g: i64 = lines.iter().map(|l| l.weight_g).sum();
    let shipping_cents = match weight_g {
        w if w <= 2_000 => 499,
        w if w <= 10_000 => 999,
        w => 999 + (w - 10_000) / 1_000 * 75,
    };
    Order {
        order_id,
        category,
        category_products,
        category_average_price_cents,
        total_cents: taxable + tax_cents + shipping_cents,
        loyalty_points: taxable / 100,
        lines,
        related,
        subtotal_cents,
        discount_cents,
        tax_cents,
        shipping_cents,
    }
}

#[derive(Serialize)]
struct CheckoutPage<'a> {
    order_id: &'a str,
    items: usize,
    total: String,
    savings: String,
    free_shipping_in: Option<String>,
    lines: Vec<PageLine<'a>>,
    recommendations: Vec<&'a str>,
}

#[derive(Serialize)]
struct PageLine<'a> {
    name: &'a str,
    sku: &'a str,
    quantity: u32,
    price: String,
    stars: String,
}

fn money(cents: i64) -> String {
    format!("${}.{:02}", cents / 100, cents.rem_euclid(100))
}

/// The frontend's checkout page for the orders service's answer.
pub fn checkout_page(order_json: &str) -> Result<String, serde_json::Error> {
    let order: Order = serde_json::from_str(order_json)?;
    let mut by_rating: Vec<&Line> = order.lines.iter().collect();
    by_rating.sort_by(|a, b| b.rating.total_cmp(&a.rating));
    let page = CheckoutPage {
        order_id: &order.order_id,
        items: order.lines.iter().map(|l| l.quantity as usize).sum(),
        total: money(order.total_cents),
        savings: money(order.discount_cents),
        free_shipping_in: (order.subtotal_cents < 100_000).then(|| money(100_000 - order.subtotal_cents)),
        lines: order
            .lines
            .iter()
            .map(|l| PageLine { name: &l.name, sku: &l.sku, quantity: l.quantity, price: money(l.line_total_cents), stars: "*".repeat(l.rating.round() as usize) })
            .collect(),
        recommendations: by_rating.iter().take(5).map(|l| l.name.as_str()).chain(order.related.iter().map(|r| r.name.as_str())).collect(),
    };
    serde_json::to_string(&page)
}
